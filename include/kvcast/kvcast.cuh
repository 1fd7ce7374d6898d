// kvcast — fused KV-cache downcast to fp8. Apache-2.0.
//
//! @file kvcast.cuh
//! The only include a user needs.
//!
//!     #include <kvcast/kvcast.cuh>
//!     kvcast::DowncastArgs<__nv_bfloat16> args;   // pointers, shape, strides, loc, scales
//!     kvcast::Status s = kvcast::downcast<kvcast::e4m3>(args, stream);
#pragma once

#include "config.cuh"    // version, macros, arch gates
#include "status.hpp"    // Status, Code
#include "format.hpp"    // e4m3, e5m2, Arithmetic, DType
#include "vec.cuh"       // AlignedVector
#include "tile.cuh"      // tile::Memory
#include "fp8.cuh"       // conversions, Quantizer
#include "layout.cuh"    // OutputLayout
#include "args.hpp"      // DowncastArgs, Slots, Scale
#include "plan.hpp"      // validate, make_plan
#include "downcast.cuh"  // the kernel (detail)
#include "launch.cuh"    // downcast, downcast_checked, downcast_fp8
