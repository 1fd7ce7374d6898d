// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file validate.hpp
//! The device-wide launcher's checks alone, in plain C++: no CUDA header, no CUDA call. For a
//! caller that wants an argument error before it builds a CUDA graph, and for tools.
#pragma once

#include "args.hpp"
#include "detail/plan.hpp"
#include "status.hpp"

namespace kvcast {

//! The first rule `args` breaks, naming the argument (the message downcast() would return), or ok.
//! `format`: the codes the call writes (`CodeFormat::nvfp4` for `downcast<nvfp4>`).
template <class T>
Status validate(const DowncastArgs<T>& args, CodeFormat format = CodeFormat::fp8) {
  detail::Plan plan;
  return detail::check_args(args, plan, format);
}

}  // namespace kvcast
