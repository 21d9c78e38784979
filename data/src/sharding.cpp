// Global permutation, flip decisions, per-rank batch plans and the uint8 HWC -> float CHW
// conversion (the hot loop of the in-memory reader); see reader.h for the exact definitions.
#include "sharding.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace ddpm::data {
namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;

uint64_t mix(uint64_t x) {  // one splitmix64 output for state x
  uint64_t z = x + kGamma;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  uint64_t state = mix(seed * 1000003ULL + uint64_t(epoch));
  auto next = [&] { const uint64_t out = mix(state); state += kGamma; return out; };
  for (int64_t i = n - 1; i >= 1; --i) {
    const uint64_t bound = uint64_t(i) + 1;
    const uint64_t threshold = (0 - bound) % bound;  // (2^64 - bound) mod bound: reject below it
    uint64_t x;
    do x = next(); while (x < threshold);
    std::swap(p[i], p[int64_t(x % bound)]);
  }
  return p;
}

bool flip_decision(uint64_t seed, int64_t epoch, int64_t index) {
  return (mix(mix(seed * 1000003ULL + uint64_t(epoch)) ^ uint64_t(index)) >> 63) != 0;
}

namespace detail {

Plan Planner::plan(const Cursor& c) {
  Plan p;
  p.before = c;
  const int64_t remaining = n_ - c.position;
  int64_t lo, hi;
  if (remaining >= g_) {
    const int64_t b = g_ / world_;
    lo = c.position + rank_ * b, hi = lo + b;
    p.after = Cursor{c.epoch, c.position + g_};
  } else {  // the smaller last batch (drop_last = false): split as evenly as possible
    lo = c.position + remaining * rank_ / world_;
    hi = c.position + remaining * (rank_ + 1) / world_;
    p.after = Cursor{c.epoch, n_};
  }
  if (perm_epoch_ != c.epoch) {
    perm_ = epoch_permutation(n_, seed_, c.epoch);
    perm_epoch_ = c.epoch;
  }
  p.indices.assign(perm_.begin() + lo, perm_.begin() + hi);
  p.flips.resize(p.indices.size());
  for (size_t i = 0; i < p.indices.size(); ++i) p.flips[i] = flip_ && flip_decision(seed_, c.epoch, p.indices[i]);
  return p;
}

namespace {

struct Lut {
  float v[256];
  Lut() {
    for (int i = 0; i < 256; ++i) v[i] = float(i) / 127.5f - 1.0f;  // bit-identical to numpy float32
  }
};
const Lut kLut;

template <int C>
void convert_sample(const uint8_t* __restrict src, float* __restrict dst, int64_t h, int64_t w, bool flip) {
  const float* lut = kLut.v;
  for (int c = 0; c < C; ++c) {
    for (int64_t y = 0; y < h; ++y) {
      const uint8_t* row = src + y * w * C + c;
      float* out = dst + (c * h + y) * w;
      if (!flip) {
        for (int64_t x = 0; x < w; ++x) out[x] = lut[row[x * C]];
      } else {
        for (int64_t x = 0; x < w; ++x) out[w - 1 - x] = lut[row[x * C]];
      }
    }
  }
}

}  // namespace

at::Tensor to_float_batch(const std::vector<const uint8_t*>& samples, const std::vector<uint8_t>& flips,
                          int64_t h, int64_t w, int64_t c) {
  const int64_t b = int64_t(samples.size());
  at::Tensor out = at::empty({b, c, h, w}, at::kFloat);  // (B, C, H, W)
  float* dst = out.data_ptr<float>();
  const int64_t per = c * h * w;
  for (int64_t i = 0; i < b; ++i) {
    if (c == 1) convert_sample<1>(samples[i], dst + i * per, h, w, flips[i]);
    else convert_sample<3>(samples[i], dst + i * per, h, w, flips[i]);
  }
  return out;
}

Batch assemble(const Plan& p, at::Tensor images, const at::Tensor& all_labels) {
  Batch b;
  b.images = std::move(images);
  const int64_t n = int64_t(p.indices.size());
  b.indices = at::empty({n}, at::kLong);
  std::copy(p.indices.begin(), p.indices.end(), b.indices.data_ptr<int64_t>());
  if (all_labels.defined()) {
    b.labels = at::empty({n}, at::kLong);
    const int64_t* src = all_labels.data_ptr<int64_t>();
    int64_t* dst = b.labels.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) dst[i] = src[p.indices[i]];
  }
  b.cursor = p.before;
  return b;
}

}  // namespace detail
}  // namespace ddpm::data
