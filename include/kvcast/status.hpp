// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file status.hpp
//! The result of every host entry point: a code and a message that names the argument and the
//! rule it broke. Trivially copyable, no allocation, no exceptions; plain C++.
#pragma once

#include <cstdarg>
#include <cstdio>

namespace kvcast {

enum class Code : int {
  ok = 0,
  null_pointer,      //!< a pointer the call needs is null
  unexpected_pointer,//!< a pointer is given whose partner is absent (k_out without k, …)
  bad_shape,         //!< a size is negative, zero where it must not be, or too large
  bad_stride,        //!< a stride is negative or makes heads, tokens or rows overlap
  bad_option,        //!< mult, out_rows or another option is outside its range
  overflow,          //!< an index of the problem does not fit in 64 bits
  rows_out_of_range, //!< the checked entry point found slots whose rows were skipped
  cuda_error,        //!< a CUDA call failed; the message holds cudaGetErrorString
};

//! Human-readable name of a code, for logs and test output.
inline const char* to_string(Code code) {
  switch (code) {
    case Code::ok: return "ok";
    case Code::null_pointer: return "null_pointer";
    case Code::unexpected_pointer: return "unexpected_pointer";
    case Code::bad_shape: return "bad_shape";
    case Code::bad_stride: return "bad_stride";
    case Code::bad_option: return "bad_option";
    case Code::overflow: return "overflow";
    case Code::rows_out_of_range: return "rows_out_of_range";
    case Code::cuda_error: return "cuda_error";
  }
  return "unknown";
}

class Status {
 public:
  Status() = default;

  //! printf-style constructor; the message is truncated to fit, never allocated.
  static Status error(Code code, const char* format, ...)
#if defined(__GNUC__)
      __attribute__((format(printf, 2, 3)))
#endif
  {
    Status status;
    status.code_ = code;
    va_list args;
    va_start(args, format);
    std::vsnprintf(status.message_, sizeof(status.message_), format, args);
    va_end(args);
    return status;
  }

  bool ok() const { return code_ == Code::ok; }
  explicit operator bool() const { return ok(); }
  Code code() const { return code_; }
  //! Empty for ok, otherwise "argument: rule (values)".
  const char* message() const { return message_; }

 private:
  Code code_ = Code::ok;
  char message_[224] = {};
};

}  // namespace kvcast
