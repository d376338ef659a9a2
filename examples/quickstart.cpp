// quickstart: build a small transformer-style block with loom's fluent API, compile it for this
// CPU, run it, and check the result against a plain C++ reference.
//
//   h      = gelu(x W1 + b1)                 feed-forward with bias and gelu
//   y      = h W2
//   attn   = softmax(y x^T / sqrt(d))        attention-style scores
//   out    = attn x

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "loom/loom.hpp"

namespace {

constexpr int64_t kSeq = 31, kModel = 64, kHidden = 128;

loom::NDArray random_array(std::vector<int64_t> shape, std::mt19937& rng, float scale) {
  loom::NDArray a(loom::DType::f32(), std::move(shape));
  std::uniform_real_distribution<float> dist(-scale, scale);
  for (int64_t i = 0; i < a.numel(); ++i) a.data_as<float>()[i] = dist(rng);
  return a;
}

// The same block in plain C++ (double precision), as the reference.
std::vector<double> reference(const loom::NDArray& x, const loom::NDArray& w1, const loom::NDArray& b1,
                              const loom::NDArray& w2) {
  auto X = [&](int64_t i, int64_t j) { return static_cast<double>(x.data_as<float>()[i * kModel + j]); };
  std::vector<double> h(kSeq * kHidden), y(kSeq * kModel), s(kSeq * kSeq), out(kSeq * kModel);
  for (int64_t i = 0; i < kSeq; ++i)
    for (int64_t j = 0; j < kHidden; ++j) {
      double acc = b1.data_as<float>()[j];
      for (int64_t k = 0; k < kModel; ++k) acc += X(i, k) * w1.data_as<float>()[k * kHidden + j];
      h[i * kHidden + j] = 0.5 * acc * (1 + std::erf(acc / std::sqrt(2.0)));
    }
  for (int64_t i = 0; i < kSeq; ++i)
    for (int64_t j = 0; j < kModel; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < kHidden; ++k) acc += h[i * kHidden + k] * w2.data_as<float>()[k * kModel + j];
      y[i * kModel + j] = acc;
    }
  for (int64_t i = 0; i < kSeq; ++i) {
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < kSeq; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < kModel; ++k) acc += y[i * kModel + k] * X(j, k);
      s[i * kSeq + j] = acc / std::sqrt(static_cast<double>(kModel));
      mx = std::max(mx, s[i * kSeq + j]);
    }
    for (int64_t j = 0; j < kSeq; ++j) sum += s[i * kSeq + j] = std::exp(s[i * kSeq + j] - mx);
    for (int64_t j = 0; j < kSeq; ++j) s[i * kSeq + j] /= sum;
  }
  for (int64_t i = 0; i < kSeq; ++i)
    for (int64_t j = 0; j < kModel; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < kSeq; ++k) acc += s[i * kSeq + k] * X(k, j);
      out[i * kModel + j] = acc;
    }
  return out;
}

}  // namespace

int main() {
  std::mt19937 rng(42);
  loom::NDArray w1 = random_array({kModel, kHidden}, rng, 0.2f);
  loom::NDArray b1 = random_array({kHidden}, rng, 0.1f);
  loom::NDArray w2 = random_array({kHidden, kModel}, rng, 0.2f);

  // 1. Build the graph.
  loom::Graph g;
  loom::Tensor x = g.input("x", {kSeq, kModel});
  loom::Tensor h = x.matmul(g.constant("w1", w1)).add(g.constant("b1", b1)).gelu();
  loom::Tensor y = h.matmul(g.constant("w2", w2));
  loom::Tensor attn = y.matmul(x.transpose()).mul(1.0 / std::sqrt(double(kModel))).softmax(-1);
  g.output(attn.matmul(x));

  // 2. Compile for this machine.
  loom::Compiler compiler(loom::Target::host_cpu());
  std::printf("target: %s\n", compiler.target().to_string().c_str());
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<loom::CompiledGraph> compiled = compiler.compile(g);
  auto t1 = std::chrono::steady_clock::now();
  if (!compiled.ok()) {
    std::fprintf(stderr, "compile failed: %s\n", compiled.status().ToString().c_str());
    return 1;
  }
  std::printf("compiled %zu kernels in %.1f ms:\n", compiled->kernels().size(),
              std::chrono::duration<double, std::milli>(t1 - t0).count());
  for (const loom::KernelInfo& k : compiled->kernels()) std::printf("  %s\n", k.name.c_str());

  // 3. Run it.
  loom::NDArray input = random_array({kSeq, kModel}, rng, 1.0f);
  auto outputs = compiled->run({input});
  if (!outputs.ok()) {
    std::fprintf(stderr, "run failed: %s\n", outputs.status().ToString().c_str());
    return 1;
  }
  const int reps = 20;
  auto t2 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) (void)compiled->run({input});
  auto t3 = std::chrono::steady_clock::now();

  // 4. Check against the plain C++ reference.
  std::vector<double> want = reference(input, w1, b1, w2);
  const loom::NDArray& out = (*outputs)[0];
  double max_err = 0;
  for (int64_t i = 0; i < out.numel(); ++i)
    max_err = std::max(max_err, std::fabs(out.data_as<float>()[i] - want[i]));
  std::printf("output %s, max |loom - reference| = %.3g\n",
              loom::shape_to_string(out.shape()).c_str(), max_err);
  std::printf("run: %.3f ms per call (mean of %d)\n",
              std::chrono::duration<double, std::milli>(t3 - t2).count() / reps, reps);
  std::printf("set LOOM_DUMP_IR=<dir> to see every stage of every kernel\n");
  if (!(max_err < 1e-4)) {
    std::fprintf(stderr, "FAILED: result differs from the reference\n");
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
