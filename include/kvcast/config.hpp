// kvcast — KV-cache quantization. Apache-2.0.
//
//! @file config.hpp
//! Version, the only macros kvcast defines, and the architecture gates.
//! Safe to include from a plain host compiler (no CUDA header is pulled in).
#pragma once

#define KVCAST_VERSION_MAJOR 0
#define KVCAST_VERSION_MINOR 2
#define KVCAST_VERSION_PATCH 0
#define KVCAST_VERSION (KVCAST_VERSION_MAJOR * 10000 + KVCAST_VERSION_MINOR * 100 + KVCAST_VERSION_PATCH)

#if defined(__CUDACC__)
#define KVCAST_HOST_DEVICE __host__ __device__ __forceinline__
#define KVCAST_DEVICE __device__ __forceinline__
#define KVCAST_HOST __host__ inline
//! For rare paths: kept out of line, so that their code is not in the hot instruction stream.
#define KVCAST_DEVICE_NOINLINE __device__ __noinline__
#define KVCAST_HOST_DEVICE_NOINLINE __host__ __device__ __noinline__
#else
#define KVCAST_HOST_DEVICE inline
#define KVCAST_HOST inline
#define KVCAST_HOST_DEVICE_NOINLINE inline
#endif

//! `_Pragma` keeps the pragma out of the preprocessor's reach and makes a typo a compile error
//! at the macro, not a silently ignored pragma.
#if defined(__CUDA_ARCH__)
#define KVCAST_UNROLL _Pragma("unroll")
#else
#define KVCAST_UNROLL
#endif

//! Hardware fp8 conversions (`cvt.rn.satfinite.e4m3x2.f32` and friends) exist from sm_89 on;
//! this is the same gate cuda_fp8.hpp uses. Older targets take cuda_fp8.h's software path,
//! which gives the same bits, only slower.
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 890)
#define KVCAST_HW_FP8 1
#else
#define KVCAST_HW_FP8 0
#endif

//! Programmatic dependent launch (`griddepcontrol`) exists from sm_90 on. Define
//! KVCAST_DISABLE_PDL to compile the two instructions out of the kernel altogether.
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && !defined(KVCAST_DISABLE_PDL)
#define KVCAST_HAS_PDL 1
#else
#define KVCAST_HAS_PDL 0
#endif

//! Scales the write computes (per (token, head)) are stored at normal L2 priority. Define
//! KVCAST_PERSISTING_SCALES to store them with evict-last priority instead
//! (cuda::access_property::persisting): with slots that scatter the rows, a scale's line is then
//! not evicted part-written while the inputs and codes stream through L2, which makes large
//! writes faster (benchmarks/NOTES.md #15zu measures by how much). The lines stay
//! persisting after the kernel, in L2's set-aside for persisting accesses
//! (cudaLimitPersistingL2CacheSize: evict-last has no effect where it is 0), and take that much
//! L2 from the kernels after it until they are evicted or cudaCtxResetPersistingL2Cache resets
//! them: hence an option, not the default.
#if defined(KVCAST_PERSISTING_SCALES)
#define KVCAST_HAS_PERSISTING_SCALES 1
#else
#define KVCAST_HAS_PERSISTING_SCALES 0
#endif

#if defined(__CUDACC__) && defined(__CUDACC_VER_MAJOR__)
#if (__CUDACC_VER_MAJOR__ < 12) || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ < 4)
#error "kvcast needs CUDA 12.4 or newer (cuda_fp8.h packed conversions, __grid_constant__)."
#endif
#endif

#if __cplusplus < 201703L && !defined(_MSVC_LANG)
#error "kvcast needs C++17."
#endif
