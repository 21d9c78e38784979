// ddpm_eval --fid-npz (and the domain accuracy of labelled samples); see fid_npz.h.
#include "fid_npz.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <iostream>
#include <stdexcept>

#include "ddpm/data/npy.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/evaluation/domain_net.h"
#include "ddpm/evaluation/fid_eval.h"

namespace ddpm::eval {

namespace {

// The domain classifier's top-1 accuracy on images uint8 (N, H, W, C) against labels (N), as
// ddpm_fid_net's test accuracy (inputs in [0, 1]): how well (guided) samples show their class.
double domain_accuracy(const std::string& net_path, const at::Tensor& images, const at::Tensor& labels,
                       const c10::Device& device) {
  at::NoGradGuard no_grad;
  evaluation::DomainNet net = evaluation::load_domain_net(net_path);
  net->to(device);
  int64_t correct = 0;
  for (int64_t i = 0; i < images.size(0); i += 256) {
    const at::Tensor x = images.slice(0, i, i + 256).permute({0, 3, 1, 2}).to(at::kFloat).div(255.0).to(device);
    const at::Tensor y = labels.slice(0, i, i + 256).to(device);
    correct += (net->forward(x).argmax(1) == y).sum().item<int64_t>();
  }
  return images.size(0) > 0 ? static_cast<double>(correct) / static_cast<double>(images.size(0)) : 0.0;
}

}  // namespace

nlohmann::ordered_json run_fid_npz(const FidNpzArgs& a, dist::Communicator& comm, const c10::Device& device) {
  if (a.extractor.empty()) throw std::invalid_argument("--fid-npz needs --fid-extractor (domain:PATH, inception:PATH or torchscript:PATH)");
  if (a.data.empty()) throw std::invalid_argument("--fid-npz needs --data, the reference set (HDF5 from ddpm_prepare)");
  const auto arrays = data::read_npz(a.npz);
  const auto it = arrays.find("arr_0");
  if (it == arrays.end() || it->second.dim() != 4 || it->second.scalar_type() != at::kByte || it->second.size(0) < 2) {
    throw std::invalid_argument("--fid-npz " + a.npz + ": expected arr_0 uint8 (N, H, W, C) with N >= 2, as "
                                "ddpm_sample writes");
  }
  const at::Tensor images = it->second;  // (N, H, W, C) uint8
  evaluation::FidSettings s;
  s.extractor = a.extractor;
  s.data = a.data;
  s.stats_path = a.stats.empty() ? evaluation::default_fid_stats_path(a.data, ".") : a.stats;
  if (a.samples > images.size(0)) {  // a FID of fewer samples than asked for is not the figure asked for
    throw std::invalid_argument("--fid-samples " + std::to_string(a.samples) + ": --fid-npz " + a.npz + " holds " +
                                std::to_string(images.size(0)) + " images; give at most that many, or sample more");
  }
  s.samples = a.samples > 0 ? a.samples : images.size(0);
  s.sampling = "npz";
  s.batch_size = a.batch > 0 ? a.batch : 250;
  const auto print = [](const std::string& line) { std::cout << line << std::endl; };
  evaluation::FidEvaluation fid(s, comm, device, print);
  const std::vector<int64_t> chw = fid.image_shape();
  if (images.size(3) != chw[0]) {
    throw std::invalid_argument("--fid-npz " + a.npz + ": images have " + std::to_string(images.size(3)) +
                                " channels, the reference set " + a.data + " has " + std::to_string(chw[0]));
  }
  const bool resize = images.size(1) != chw[1] || images.size(2) != chw[2];
  const std::string how = resize ? "resized bilinearly " + std::to_string(images.size(1)) + "x" +
                                       std::to_string(images.size(2)) + " -> " + std::to_string(chw[1]) + "x" +
                                       std::to_string(chw[2])
                                 : "as stored";
  if (comm.rank() == 0) {
    std::cout << "ddpm_eval --fid-npz: " << a.npz << ", " << s.samples << " images (" << how << "), extractor "
              << fid.extractor_name() << ", reference " << a.data << ", " << comm.world_size() << " rank(s)" << std::endl;
  }
  const evaluation::FidReport r = fid.evaluate([&](int64_t begin, int64_t end) {
    at::Tensor u = images.slice(0, begin, end).permute({0, 3, 1, 2}).to(at::kDouble);  // (n, C, H, W) bytes
    if (resize) {  // in float64 on byte values, rounded half up to bytes
      u = at::floor(at::upsample_bilinear2d(u, {chw[1], chw[2]}, /*align_corners=*/false) + 0.5).clamp(0, 255);
    }
    // (u + 0.5) / 127.5 - 1: the evaluation's quantisation (truncation of (x + 1) * 127.5) gives
    // the bytes u back exactly.
    const at::Tensor x = u.add(0.5).div(127.5).sub(1.0).to(at::kFloat);
    return x;
  });
  if (comm.rank() != 0) return {};
  std::printf("fid %.6f  extractor=%s samples=%lld (%s) seconds=%.1f\n", r.fid, r.extractor.c_str(),
              static_cast<long long>(r.samples), how.c_str(), r.seconds);
  nlohmann::ordered_json j;
  j["fid_npz"] = a.npz;
  j["fid"] = r.fid;
  j["fid_extractor"] = r.extractor;
  j["fid_samples"] = r.samples;
  j["fid_images"] = how;
  j["fid_data"] = a.data;
  j["fid_stats"] = s.stats_path;
  j["fid_reference_count"] = fid.reference_count();
  j["fid_seconds"] = r.seconds;
  const auto labels = arrays.find("arr_1");
  if (labels != arrays.end() && evaluation::parse_extractor_spec(s.extractor).kind == "domain") {
    if (resize) {
      throw std::invalid_argument("--fid-npz " + a.npz + ": the domain accuracy of the labels arr_1 needs images of "
                                  "the reference size");
    }
    const at::Tensor used = images.slice(0, 0, s.samples);  // (n, H, W, C)
    const double acc = domain_accuracy(evaluation::parse_extractor_spec(s.extractor).path, used,
                                       labels->second.to(at::kLong).slice(0, 0, s.samples), device);
    std::printf("accuracy %.4f  (domain classifier %s on the labels arr_1, %lld samples)\n", acc, r.extractor.c_str(),
                static_cast<long long>(s.samples));
    j["accuracy"] = acc;
  }
  j["ranks"] = comm.world_size();
  return j;
}

}  // namespace ddpm::eval
