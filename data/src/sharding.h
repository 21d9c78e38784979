// Internal: the plan of one batch (which global positions, samples and flips a rank takes) and
// the conversion of uint8 HWC samples into a float NCHW batch. Shared by both reader sources.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "ddpm/data/reader.h"

namespace ddpm::data::detail {

struct Plan {
  Cursor before, after;
  std::vector<int64_t> indices;  // sample indices in the file, in global order
  std::vector<uint8_t> flips;
};

class Planner {
 public:
  Planner(int64_t n, int64_t global_batch, int rank, int world_size, uint64_t seed, bool drop_last, bool flip)
      : n_(n), g_(global_batch), rank_(rank), world_(world_size), seed_(seed), drop_last_(drop_last), flip_(flip) {}
  bool epoch_done(const Cursor& c) const { return drop_last_ ? n_ - c.position < g_ : c.position >= n_; }
  Cursor normalized(Cursor c) const {
    if (epoch_done(c)) c = Cursor{c.epoch + 1, 0};
    return c;
  }
  Plan plan(const Cursor& c);  // c must not be done

 private:
  int64_t n_, g_;
  int rank_, world_;
  uint64_t seed_;
  bool drop_last_, flip_;
  int64_t perm_epoch_ = -1;
  std::vector<int64_t> perm_;
};

// images float (B, C, H, W) from B pointers to uint8 (H, W, C) samples, flipped where flips[i].
at::Tensor to_float_batch(const std::vector<const uint8_t*>& samples, const std::vector<uint8_t>& flips,
                          int64_t h, int64_t w, int64_t c);
Batch assemble(const Plan& p, at::Tensor images, const at::Tensor& all_labels);

}  // namespace ddpm::data::detail
