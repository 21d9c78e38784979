// U-Net options: validation, presets and text overrides; see ddpm/model/unet/options.h.
#include "ddpm/model/unet/options.h"

#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>

namespace ddpm::model {
namespace {

[[noreturn]] void bad(const std::string& field, const std::string& found, const std::string& expected) {
  throw std::invalid_argument("UNetOptions." + field + " = " + found + ": expected " + expected);
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

int64_t parse_int(const std::string& key, const std::string& v) {
  size_t pos = 0;
  int64_t x = 0;
  try {
    x = std::stoll(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos != v.size() || v.empty()) throw std::invalid_argument("U-Net option " + key + ": '" + v + "' is not an integer");
  return x;
}

double parse_double(const std::string& key, const std::string& v) {
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos != v.size() || v.empty()) throw std::invalid_argument("U-Net option " + key + ": '" + v + "' is not a number");
  return x;
}

bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  throw std::invalid_argument("U-Net option " + key + ": '" + v + "' is not a boolean (true/false)");
}

std::vector<int64_t> parse_list(const std::string& key, const std::string& v) {
  std::vector<int64_t> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(parse_int(key, item));
  return out;
}

using Setter = std::function<void(UNetOptions&, const std::string&, const std::string&)>;
using Getter = std::function<std::string(const UNetOptions&)>;
struct Field {
  Setter set;
  Getter get;
};

const std::vector<std::pair<std::string, Field>>& fields() {
  // clang-format off
#define DDPM_INT(f) {#f, {[](UNetOptions& o, const std::string& k, const std::string& v) { o.f = parse_int(k, v); }, \
                          [](const UNetOptions& o) { return std::to_string(o.f); }}}
#define DDPM_BOOL(f) {#f, {[](UNetOptions& o, const std::string& k, const std::string& v) { o.f = parse_bool(k, v); }, \
                           [](const UNetOptions& o) { return std::string(o.f ? "true" : "false"); }}}
#define DDPM_LIST(f) {#f, {[](UNetOptions& o, const std::string& k, const std::string& v) { o.f = parse_list(k, v); }, \
                           [](const UNetOptions& o) { return join(o.f); }}}
  static const std::vector<std::pair<std::string, Field>> table = {
      DDPM_INT(in_channels), DDPM_INT(model_channels), DDPM_INT(out_channels), DDPM_INT(num_res_blocks),
      DDPM_LIST(attention_resolutions),
      {"dropout", {[](UNetOptions& o, const std::string& k, const std::string& v) { o.dropout = parse_double(k, v); },
                   [](const UNetOptions& o) { std::ostringstream s; s << o.dropout; return s.str(); }}},
      DDPM_LIST(channel_mult), DDPM_BOOL(conv_resample),
      {"num_classes", {[](UNetOptions& o, const std::string& k, const std::string& v) {
                         if (v == "none" || v.empty()) o.num_classes.reset(); else o.num_classes = parse_int(k, v); },
                       [](const UNetOptions& o) { return o.num_classes ? std::to_string(*o.num_classes) : std::string("none"); }}},
      DDPM_INT(num_heads), DDPM_INT(num_head_channels), DDPM_BOOL(use_scale_shift_norm), DDPM_BOOL(resblock_updown),
      DDPM_BOOL(learn_sigma), DDPM_BOOL(use_checkpoint), DDPM_INT(image_size),
      DDPM_BOOL(use_new_attention_order), DDPM_BOOL(sdpa_attention), DDPM_BOOL(fused_group_norm),
      DDPM_BOOL(channels_last)};
#undef DDPM_INT
#undef DDPM_BOOL
#undef DDPM_LIST
  // clang-format on
  return table;
}

// Every attention block's width (the levels with attention and the middle block, the last level)
// must split into the heads: num_head_channels divides it, or num_heads does.
void validate_attention_heads(const UNetOptions& o) {
  std::vector<int64_t> levels{static_cast<int64_t>(o.channel_mult.size()) - 1};  // the middle block
  for (int64_t r : o.attention_resolutions) {
    int64_t level = 0;
    for (int64_t ds = o.image_size / r; ds > 1; ds /= 2) ++level;  // ds = 2^level (checked above)
    levels.push_back(level);
  }
  for (int64_t level : levels) {
    const int64_t width = o.channel_mult[static_cast<size_t>(level)] * o.model_channels;
    const std::string w = std::to_string(width), l = std::to_string(level);
    const bool middle = level + 1 == static_cast<int64_t>(o.channel_mult.size());
    const std::string where = middle ? "the attention at level " + l + " and in the middle block (" + w + " channels)"
                                     : "the attention at level " + l + " (" + w + " channels)";
    if (o.num_head_channels > 0 && width % o.num_head_channels) {
      bad("num_head_channels", std::to_string(o.num_head_channels),
          "a divisor of " + std::to_string(width) + " for " + where +
              "; set num_head_channels to a divisor of every attention width (e.g. 32), or to -1 to use num_heads");
    }
    if (o.num_head_channels <= 0 && width % o.num_heads) {
      bad("num_heads", std::to_string(o.num_heads),
          "a divisor of " + std::to_string(width) + " for " + where +
              "; set num_heads to a divisor of every attention width, or num_head_channels (channels per head)");
    }
  }
}

}  // namespace

void UNetOptions::validate() const {
  if (in_channels <= 0) bad("in_channels", std::to_string(in_channels), "> 0");
  if (out_channels <= 0) bad("out_channels", std::to_string(out_channels), "> 0");
  if (model_channels <= 0 || model_channels % 32) {
    bad("model_channels", std::to_string(model_channels), "a positive multiple of 32 (GroupNorm has 32 groups)");
  }
  if (num_res_blocks < 1) bad("num_res_blocks", std::to_string(num_res_blocks), ">= 1");
  if (channel_mult.empty()) bad("channel_mult", "(empty)", "one multiplier per level, e.g. 1,2,2,2");
  for (int64_t m : channel_mult) {
    if (m <= 0) bad("channel_mult", join(channel_mult), "positive multipliers");
  }
  if (dropout < 0 || dropout >= 1) bad("dropout", std::to_string(dropout), "a probability in [0, 1)");
  const int64_t factor = int64_t{1} << (channel_mult.size() - 1);
  if (image_size <= 0 || image_size % factor) {
    bad("image_size", std::to_string(image_size),
        "a multiple of " + std::to_string(factor) + " (2^(levels-1) for " + std::to_string(channel_mult.size()) +
            " levels)");
  }
  for (int64_t r : attention_resolutions) {
    if (r <= 0 || image_size % r || (image_size / r) & (image_size / r - 1) || image_size / r > factor) {
      bad("attention_resolutions", join(attention_resolutions),
          "feature-map sizes image_size/2^k (k < levels) of image_size " + std::to_string(image_size));
    }
  }
  if (num_classes && *num_classes <= 0) bad("num_classes", std::to_string(*num_classes), "> 0 or none");
  if (num_head_channels <= 0 && num_heads <= 0) {
    bad("num_heads", std::to_string(num_heads), "> 0 (or num_head_channels > 0)");
  }
  validate_attention_heads(*this);
}

UNetOptions unet_preset(const std::string& name) {
  UNetOptions o;  // defaults: in 3, out 3, ch 128, mult 1,2,2,2, 2 blocks, attention at 16
  if (name == "ddpm-cifar10") {
    o.dropout = 0.1;
  } else if (name == "improved-cifar10") {
    o.num_res_blocks = 3;
    o.attention_resolutions = {16, 8};
    o.num_heads = 4;
    o.use_scale_shift_norm = true;
    o.learn_sigma = true;
    o.dropout = 0.3;
  } else if (name == "improved-imagenet64") {
    o.channel_mult = {1, 2, 3, 4};
    o.num_res_blocks = 3;
    o.attention_resolutions = {16, 8};
    o.num_heads = 4;
    o.use_scale_shift_norm = true;
    o.learn_sigma = true;
    o.image_size = 64;
  } else if (name == "fmnist-small") {
    // 1.11M parameters, 0.50 GFLOP forward per 32x32 image (0.38 at 28x28): the cheapest of the
    // candidates measured with ddpm_bench_unet (see the U-Net note) that keeps 3 levels and
    // attention at 8x8; ch 64 costs 4x the FLOP, 2 blocks per level +11%.
    o.in_channels = 1;
    o.out_channels = 1;
    o.model_channels = 32;
    o.channel_mult = {1, 2, 2};
    o.num_res_blocks = 1;
    o.attention_resolutions = {8};
    o.image_size = 32;
  } else if (name == "tiny") {
    o.model_channels = 32;
    o.channel_mult = {1, 2};
    o.num_res_blocks = 1;
    o.attention_resolutions = {8};
    o.num_heads = 2;
    o.image_size = 16;
  } else {
    throw std::invalid_argument("unknown U-Net preset '" + name + "'; valid presets: " + join(unet_preset_names()));
  }
  return o;
}

std::vector<std::string> unet_preset_names() {
  return {"ddpm-cifar10", "improved-cifar10", "improved-imagenet64", "fmnist-small", "tiny"};
}

std::vector<std::string> unet_option_keys() {
  std::vector<std::string> keys;
  for (const auto& [k, f] : fields()) keys.push_back(k);
  return keys;
}

void set_unet_option(UNetOptions& options, const std::string& key, const std::string& value) {
  for (const auto& [k, f] : fields()) {
    if (k == key) return f.set(options, key, value);
  }
  throw std::invalid_argument("unknown U-Net option '" + key + "'; valid options: " + join(unet_option_keys()));
}

std::string describe(const UNetOptions& options) {
  std::string s;
  for (const auto& [k, f] : fields()) s += k + "=" + f.get(options) + "\n";
  return s;
}

}  // namespace ddpm::model
