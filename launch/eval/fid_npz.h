// ddpm_eval --fid-npz FILE: the FID of images stored in an .npz (arr_0 uint8 (N, H, W, C), as
// ddpm_sample and improved-diffusion write them) against a dataset's reference statistics, with
// the extractors and cache of training FIDs. Images of another size than the reference's are
// resized bilinearly (align_corners false, rounded to bytes) first: a base model's samples upsampled,
// for instance. With labels (arr_1) and a domain extractor, also the domain classifier's accuracy
// on them (classifier guidance: how well samples show the class they were guided to).
#pragma once
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace ddpm::dist {
class Communicator;
}

namespace ddpm::eval {

struct FidNpzArgs {
  std::string npz, data, extractor, stats;  // stats "" = fid_stats.h5 beside data
  int64_t samples = 0;                      // the first N images of the file, 0 = all
  int64_t batch = 0;                        // images per feature batch, 0 = 250
};

// Collective; rank 0 prints and returns the summary (empty elsewhere). Throws std::invalid_argument
// naming the flag for a missing extractor or data, an empty file or another channel count.
nlohmann::ordered_json run_fid_npz(const FidNpzArgs& a, dist::Communicator& comm, const c10::Device& device);

}  // namespace ddpm::eval
