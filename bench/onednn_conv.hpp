// oneDNN's convolution as a benchmark peer (bench_cpu_peers, bench_layouts): in the layouts it
// prefers (format_tag::any, inputs reordered once, untimed) or plain NCHW in and out.
#pragma once

#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>

#include "bench_support.hpp"

namespace loom_bench {

// Batch-1 conv2d, NCHW input (c_in x h x w), c_out filters of kernel x kernel, OIHW weights.
struct ConvShape {
  int c_in, h, w, c_out, kernel, stride, pad, groups;
  int out_h() const { return (h + 2 * pad - kernel) / stride + 1; }
  int out_w() const { return (w + 2 * pad - kernel) / stride + 1; }
  double flops() const {  // multiplies and adds of the direct method
    return 2.0 * c_out * out_h() * out_w() * (c_in / groups) * kernel * kernel;
  }
};

inline dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Runs one oneDNN primitive on memory prepared beforehand; the result is reordered to the plain
// layout only when asked for (never inside the timed loop).
class OnednnPrimitiveRunner final : public Runner {
 public:
  OnednnPrimitiveRunner(dnnl::primitive primitive, std::unordered_map<int, dnnl::memory> args,
                        dnnl::memory::desc plain_dst)
      : primitive_(std::move(primitive)),
        args_(std::move(args)),
        plain_dst_(plain_dst, cpu_engine()),
        stream_(cpu_engine()) {}
  void run() override {
    primitive_.execute(stream_, args_);
    stream_.wait();
  }
  std::vector<float> output() override {
    dnnl::memory dst = args_.at(DNNL_ARG_DST);
    dnnl::reorder(dst, plain_dst_).execute(stream_, dst, plain_dst_);
    stream_.wait();
    const float* p = static_cast<const float*>(plain_dst_.get_data_handle());
    return std::vector<float>(p, p + plain_dst_.get_desc().get_size() / sizeof(float));
  }

 private:
  dnnl::primitive primitive_;
  std::unordered_map<int, dnnl::memory> args_;
  dnnl::memory plain_dst_;
  dnnl::stream stream_;
};

// user, or a copy of it reordered into the layout want (done once, outside any timing).
inline dnnl::memory in_layout(dnnl::memory user, const dnnl::memory::desc& want) {
  if (user.get_desc() == want) return user;
  dnnl::memory converted(want, cpu_engine());
  dnnl::stream stream(cpu_engine());
  dnnl::reorder(user, converted).execute(stream, user, converted);
  stream.wait();
  return converted;
}

using Tag = dnnl::memory::format_tag;
constexpr auto kF32 = dnnl::memory::data_type::f32;

inline std::unique_ptr<Runner> onednn_conv(const ConvShape& s, const loom::NDArray& x_values,
                                           const loom::NDArray& w_values, bool nchw,
                                           std::string& detail) {
  const dnnl::memory::dims src{1, s.c_in, s.h, s.w}, dst{1, s.c_out, s.out_h(), s.out_w()};
  const bool grouped = s.groups > 1;
  const dnnl::memory::dims wei = grouped ? dnnl::memory::dims{s.groups, s.c_out / s.groups,
                                                              s.c_in / s.groups, s.kernel, s.kernel}
                                         : dnnl::memory::dims{s.c_out, s.c_in, s.kernel, s.kernel};
  dnnl::memory::desc src_plain(src, kF32, Tag::nchw), dst_plain(dst, kF32, Tag::nchw);
  dnnl::memory::desc wei_plain(wei, kF32, grouped ? Tag::goihw : Tag::oihw);
  auto chosen = [&](const dnnl::memory::desc& plain, const dnnl::memory::dims& dims) {
    return nchw ? plain : dnnl::memory::desc(dims, kF32, Tag::any);
  };
  dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference,
                                       dnnl::algorithm::convolution_auto, chosen(src_plain, src),
                                       chosen(wei_plain, wei), chosen(dst_plain, dst),
                                       {s.stride, s.stride}, {s.pad, s.pad}, {s.pad, s.pad});
  dnnl::convolution_forward::primitive_desc pd(desc, cpu_engine());
  detail = pd.impl_info_str();
  dnnl::memory x(src_plain, cpu_engine(), x_values.data());
  dnnl::memory w(wei_plain, cpu_engine(), w_values.data());
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, in_layout(x, pd.src_desc())},
      {DNNL_ARG_WEIGHTS, in_layout(w, pd.weights_desc())},
      {DNNL_ARG_DST, dnnl::memory(pd.dst_desc(), cpu_engine())}};
  return std::make_unique<OnednnPrimitiveRunner>(dnnl::convolution_forward(pd), std::move(args),
                                                 dst_plain);
}

}  // namespace loom_bench
