// state_dict save/load for modules and the U-Net; see ddpm/model/unet/state_dict.h.
#include "ddpm/model/unet/state_dict.h"

#include <ATen/ATen.h>

#include <map>
#include <sstream>
#include <stdexcept>

namespace ddpm::model {
namespace {

std::string shape(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// At most `limit` entries of a list on one line, then "and N more": " {a; b; and 7 more}".
std::string listing(const std::vector<std::string>& items, size_t limit = 5) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < limit; ++i) s += (i ? "; " : " {") + items[i];
  if (items.size() > limit) s += "; and " + std::to_string(items.size() - limit) + " more";
  return s + "}";
}

}  // namespace

TensorDict state_dict(const torch::nn::Module& module) {
  TensorDict out;
  for (const auto& item : module.named_modules("", /*include_self=*/true)) {
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) out.emplace_back(prefix + p.key(), p.value());
    for (const auto& b : item.value()->named_buffers(/*recurse=*/false)) out.emplace_back(prefix + b.key(), b.value());
  }
  return out;
}

void load_state_dict(torch::nn::Module& module, const TensorDict& tensors, const std::string& source) {
  std::map<std::string, at::Tensor> given(tensors.begin(), tensors.end());
  const TensorDict own = state_dict(module);
  std::vector<std::string> missing, unexpected, misshaped;
  std::map<std::string, bool> known;
  for (const auto& [name, t] : own) {
    known[name] = true;
    auto it = given.find(name);
    if (it == given.end()) {
      missing.push_back(name + " " + shape(t));
    } else if (it->second.sizes() != t.sizes()) {
      misshaped.push_back(name + ": file has " + shape(it->second) + ", model expects " + shape(t));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (!known.count(name)) unexpected.push_back(name + " " + shape(t));
  }
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty()) {
    std::string msg = "cannot load " + source + " into the model (" + std::to_string(own.size()) +
                      " tensors expected, " + std::to_string(tensors.size()) + " given):";
    // One line (it ends up as ddpm_train's one-line error), at most 5 keys of each kind.
    if (!missing.empty()) msg += " missing keys (" + std::to_string(missing.size()) + "):" + listing(missing);
    if (!unexpected.empty()) msg += " unexpected keys (" + std::to_string(unexpected.size()) + "):" + listing(unexpected);
    if (!misshaped.empty()) msg += " mis-shaped keys (" + std::to_string(misshaped.size()) + "):" + listing(misshaped);
    msg += "; check that the model options (preset and flags) are those the weights were trained with";
    throw std::runtime_error(msg);
  }
  at::NoGradGuard no_grad;
  for (auto& [name, t] : own) t.copy_(given.at(name));
}

void save_unet_weights(const UNet& unet, const std::string& path) { save_tensor_dict(path, state_dict(*unet)); }

void load_unet_state_dict(UNet& unet, TensorDict tensors, const std::string& source) {
  // improved-diffusion's class-conditional models have no null-label row: keep ours.
  const auto& o = unet->options();
  for (auto& [name, t] : tensors) {
    if (name == "label_emb.weight" && o.num_classes && t.dim() == 2 && t.size(0) == *o.num_classes) {
      for (const auto& item : unet->named_parameters()) {
        const at::Tensor& own = item.value();
        if (item.key() == name && own.size(1) == t.size(1)) {
          at::Tensor rows = t.to(own.device(), own.scalar_type());
          t = at::cat({rows, own.detach().slice(0, *o.num_classes)}, 0);
        }
      }
    }
  }
  load_state_dict(*unet, tensors, source);
}

void load_unet_weights(UNet& unet, const std::string& path) {
  load_unet_state_dict(unet, load_tensor_dict(path), "weights file " + path);
}

}  // namespace ddpm::model
