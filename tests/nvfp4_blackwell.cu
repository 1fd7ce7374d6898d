// kvcast tests — compiled for sm_100a and sm_120a in CI (.ci/run), never run here: the NVFP4
// write and read for every input type, whose codes come from the hardware conversion
// (`cvt.rn.satfinite.e2m1x2.f32`) on those targets (CI checks the conversion is in the PTX), and
// the fast_math write (FlashInfer's numerics: its own arithmetic on every target).
#include <kvcast/nvfp4.cuh>

template <class T>
kvcast::Status write_nvfp4(const kvcast::DowncastArgs<T>& a) {
  return kvcast::downcast<kvcast::nvfp4>(a);
}
template <class T>
kvcast::Status write_nvfp4_fast_math(const kvcast::DowncastArgs<T>& a) {
  return kvcast::downcast<kvcast::nvfp4, kvcast::Arithmetic::fast_math>(a);
}
template <class T>
kvcast::Status read_nvfp4(const kvcast::UpcastArgs<T>& a) {
  return kvcast::upcast<kvcast::nvfp4>(a);
}
template kvcast::Status write_nvfp4(const kvcast::DowncastArgs<__nv_bfloat16>&);
template kvcast::Status write_nvfp4(const kvcast::DowncastArgs<__half>&);
template kvcast::Status write_nvfp4(const kvcast::DowncastArgs<float>&);
template kvcast::Status write_nvfp4_fast_math(const kvcast::DowncastArgs<__nv_bfloat16>&);
template kvcast::Status write_nvfp4_fast_math(const kvcast::DowncastArgs<__half>&);
template kvcast::Status write_nvfp4_fast_math(const kvcast::DowncastArgs<float>&);
template kvcast::Status read_nvfp4(const kvcast::UpcastArgs<__nv_bfloat16>&);
template kvcast::Status read_nvfp4(const kvcast::UpcastArgs<__half>&);
template kvcast::Status read_nvfp4(const kvcast::UpcastArgs<float>&);
