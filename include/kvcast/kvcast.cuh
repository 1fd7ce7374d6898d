// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file kvcast.cuh
//! The only include a user needs.
//!
//!     #include <kvcast/kvcast.cuh>
//!     kvcast::DowncastArgs<__nv_bfloat16> args;   // pointers, shape, strides, loc, out_rows, scales
//!     kvcast::Status s = kvcast::downcast<kvcast::e4m3>(args, stream);
#pragma once

#include "config.hpp"     // version, macros, arch gates
#include "status.hpp"     // Status, Code
#include "format.hpp"     // e4m3, e5m2, Arithmetic, DType
#include "layout.hpp"     // OutputLayout
#include "args.hpp"       // DowncastArgs, UpcastArgs, Slots, Scale
#include "vec.cuh"        // AlignedVector
#include "tile.cuh"       // tile::Memory
#include "fp8.cuh"        // conversions, Quantizer
#include "policy.cuh"     // Fp8, PerTensorScale
#include "validate.hpp"   // validate
#include "downcast.cuh"   // device-wide: downcast, downcast_checked, downcast_fp8
#include "upcast.cuh"     // device-wide read: upcast, upcast_checked
#include "block.cuh"      // block-level: BlockDowncast, make_block_write_params
