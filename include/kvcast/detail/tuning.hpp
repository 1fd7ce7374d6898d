// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file detail/tuning.hpp
//! The tuning table of the write and the read: every number the planners decide with, named by
//! what it decides, each citing the measurement behind it (benchmarks/NOTES.md, by its label).
//! Plain C++. Timings live in NOTES, not here.
#pragma once

#include <cstdint>
#include <limits>

#include "../format.hpp"
#include "geometry.hpp"

namespace kvcast {
namespace detail {
namespace tuning {

//! Widest vector a thread takes, by the size of the call (elements a tensor). Small calls are
//! all latency: more threads, each with a shorter chain after its loads, finish sooner; large
//! ones are all bandwidth: fewer, wider accesses.
struct VectorTier {
  std::int64_t up_to_elements;  //!< calls of at most this many elements a tensor...
  int fp32_mode;                //!< ...take vectors of at most this many elements in fp32 mode,
  int input_precision;          //!< and at most this many in input-precision mode.
};
constexpr VectorTier kVectorTiers[] = {
    // NOTES v11 (c): fp32 mode converts a pair with two products and two conversions, so on
    // the tiniest calls its thread's chain is what the call waits for.
    {std::int64_t{1} << 11, 2, 4},
    // NOTES v4e: 2^16 / 2^18 / 2^20 tried, 2^18 best; "tried" after v7b: 2 elements lose here.
    {std::int64_t{1} << 18, 4, 4},
    // NOTES v2 (8-element vectors up to 2M elements), v5d.
    {std::int64_t{1} << 21, 8, 8},
    {std::numeric_limits<std::int64_t>::max(), 16, 16},
};

//! NOTES v7b: with 16-bit inputs input precision needs half fp32 mode's registers, and its
//! 16-element vectors kept twice the bytes an SM in flight that DRAM serves best.
constexpr int kInputPrecision16BitMaxVector = 8;

//! Elements a thread where no vector access is legal (one element an access, the warp's lanes
//! interleaved): at least this many...
constexpr int kElementWiseVector = 8;
//! ...and, for 16-bit inputs in calls above this many elements a tensor, 16 (NOTES v5d: 16 is
//! slower below it).
constexpr std::int64_t kElementWiseWideAbove = std::int64_t{1} << 21;

//! Dense calls of 16-bit inputs with no vector access legal take the realigned kernel above
//! this many elements a tensor (NOTES v9, v10; its threshold measured in "tried" after v10).
constexpr std::int64_t kRealignAbove = std::int64_t{1} << 21;

//! Rows of several chunks put the chunks on grid x (GridOrder::chunks_first) in calls above
//! this many elements a tensor, with vectors of at least kChunksFirstMinVectorBytes (geometry.hpp;
//! NOTES v7a: mixed at 512-1024 tokens, a gain from 2048 up).
constexpr std::int64_t kChunksFirstAbove = std::int64_t{1} << 23;

//! The narrowest vector of the scale policies other than per tensor (their kernels have no
//! 2-element one, but PerHeadScale's dense kernel: NOTES #15p): the calls for which the tiers
//! ask for 2 take this (NOTES #15a).
constexpr int kScaledMinVector = 4;

//! Per-(token, head) scales take the widest vector above this many elements a tensor (the tiers
//! give 8 up to 2^21): a row-head's reduction and its scale's division are a thread's fixed work,
//! spread over twice the elements (NOTES #15zg: 2^20 and 2^21 elements 1.03-1.20x faster, 2^19
//! 0.95-0.98x; per-head scales lose at 2^20).
constexpr std::int64_t kTokenHeadWidestAbove = std::int64_t{1} << 19;

//! Per-(token, head) calls in the serving call's form (detail::lean_token_head_call) up to this
//! many elements a tensor take a warp a row-head with nothing general on its path
//! (write_row_head_lean_kernel): at 1-16 decode tokens the generality of the dense and
//! row-head-warp kernels cost as much as the arithmetic (NOTES #15zi). Past it the dense kernel's
//! wider vectors win: 256 tokens of 8x128 (2^18) were 1.11x faster lean, 1024 (2^20) 0.83x
//! (NOTES #15zk). Row-heads of 576 go on to kTokenHeadLean576UpTo: 1.11-1.13x faster lean at
//! 256, 1024 and 4096 tokens (2.4 M elements) than the row-head-warp kernel.
constexpr std::int64_t kTokenHeadLeanUpTo = std::int64_t{1} << 18;
constexpr std::int64_t kTokenHeadLean576UpTo = std::int64_t{1} << 22;

//! The lean row-head warp puts row-heads of 64 without the amax output apart (K's and V's in
//! warps of their own, detail::tensors_apart) up to this many elements a tensor, in one warp
//! above: apart, 1-16 tokens of 8x64 (up to 2^13) ran 1.03-1.06x faster cold, 512 tokens (2^18)
//! 0.77x (NOTES #15zw). Between the two, unmeasured: the largest call measured faster.
constexpr std::int64_t kLeanRowHead64ApartUpTo = std::int64_t{1} << 13;

//! Per-tensor and per-head calls with the amax output in the serving call's form
//! (detail::lean_amax_call) up to this many elements a tensor take a thread a vector of
//! kAmaxLeanVec with nothing general on its path (write_amax_lean_kernel): the amax itself costs
//! such a call about nothing, the dense kernel's generality most of the amax's cost (NOTES
//! #15zj, #15zm). At most kAmaxAlwaysAddUpToCtas CTAs a tensor, so every warp adds its maximum.
//! Per-(token, head) calls with the amax output take the lean row-head warp (kTokenHeadLeanUpTo)
//! up to the same size, every warp adding its row-head's maximum: past it, every warp's atomic
//! on one address queues (NOTES #15zk).
constexpr std::int64_t kAmaxLeanUpTo = std::int64_t{1} << 16;

//! The amax output: in grids of at most this many CTAs every warp adds its maximum; in larger
//! ones only a warp whose maximum is above the value its SM last read (NOTES #15d) and above
//! what its CTA's warps have added (NOTES #15zx).
constexpr std::int64_t kAmaxAlwaysAddUpToCtas = 64;

//! The read's vectors, widest first (codes a thread: 16- and 4-byte loads, or pieces of them;
//! the output's stores up to 16 bytes of T): the write's widest access, and 4 for rows that 16
//! does not divide. 32 codes a thread (two 16-byte loads, before the loads were predicated) ran
//! 0.63-0.72x as fast on 8x128 rows (NOTES #16a).
constexpr int kReadVectors[] = {16, 4};

//! Thread groups (a power of two a chunk of a segment, vector kernels) leave at most
//! 1/kIdleShare of a segment's threads without a vector: the read's (NOTES #16a) and the write's
//! (NOTES #15g) rows of 576 take groups of 4 over 9 chunks, not one of 64 with 28 idle.
constexpr std::int64_t kIdleShare = 16;
//! The write sizes its groups so only in calls above this many elements a tensor: smaller ones
//! are latency, and one group a segment, idle threads and all, finishes sooner than a segment cut
//! over several CTAs (NOTES #15g: 1-16 tokens of 576 ran 0.94-0.98x as fast cut in 9).
constexpr std::int64_t kFewIdleAbove = std::int64_t{1} << 18;

//! The NVFP4 write of 16-bit inputs takes a whole block a thread (detail::nvfp4_vec) only in
//! calls above this many elements a tensor, half a block below: whole blocks ran 1.26-1.30x
//! faster from 64 MB but 0.91-0.95x as fast at 4-16 decode tokens (NOTES #17d), where each
//! thread's longer chain is what the call waits for. Between the two ends, unmeasured: the
//! write's own latency/bandwidth boundary (kFewIdleAbove).
constexpr std::int64_t kNvfp4WholeBlocksAbove = kFewIdleAbove;

//! NVFP4 writes and per-(token, head) rows of 576 put K and V in CTAs of their own (grid z) in
//! calls of both tensors up to this many elements a tensor (detail::tensors_apart): 1.03-1.23x
//! faster at 1-16 decode tokens, 1.00-1.18x at 1024 tokens (8x128, 1x576); 0.84-1.01x at 4096
//! and 0.79-0.86x from 64 MB (NOTES #15zc, #15ze).
constexpr std::int64_t kTensorsApartUpTo = std::int64_t{1} << 20;

//! CTAs an SM must hold of the exact-mode NVFP4 write (its __launch_bounds__ hint): the whole-
//! block kernel of 16-bit inputs, left alone, takes 78 registers (three CTAs of kBlockSize); held
//! to 64 (four) it ran 1.03-1.06x faster from 64 MB, with one 2-byte spill and decode unchanged;
//! held to 48 (five) it spilled and lost on 576-element rows (NOTES #17h).
constexpr int kNvfp4MinCtasPerSm = 4;

//! The narrowest vector the tiers ask for in `mode`: narrower ones would only be alignment
//! fallbacks, which the interleaved kernels serve.
constexpr int narrowest_vector(Arithmetic mode) {
  int narrowest = 1 << 30;
  for (const VectorTier& tier : kVectorTiers) {
    const int v = mode == Arithmetic::fp32 ? tier.fp32_mode : tier.input_precision;
    narrowest = v < narrowest ? v : narrowest;
  }
  return narrowest;
}

//! The widest vector of a call of `elements` elements a tensor (before alignment narrows it).
constexpr int widest_vector(std::int64_t elements, Arithmetic mode, int input_bytes) {
  int widest = 0;
  for (const VectorTier& tier : kVectorTiers) {
    if (elements <= tier.up_to_elements) {
      widest = mode == Arithmetic::fp32 ? tier.fp32_mode : tier.input_precision;
      break;
    }
  }
  if (mode == Arithmetic::input_precision && input_bytes == 2 && widest > kInputPrecision16BitMaxVector)
    widest = kInputPrecision16BitMaxVector;
  const int by_bytes = kMaxVectorBytes / input_bytes;
  return widest < by_bytes ? widest : by_bytes;
}

//! The widest vector of any call (the last tier's, as the mode and input type allow it).
constexpr int widest_vector_of_any_call(Arithmetic mode, int input_bytes) {
  return widest_vector(std::numeric_limits<std::int64_t>::max(), mode, input_bytes);
}

}  // namespace tuning
}  // namespace detail
}  // namespace kvcast
