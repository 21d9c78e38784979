// The ddpm_train command line (CLI11): one flag per TrainConfig key, resolved as
// preset < --config file < flags; see ddpm/trainer/config.h.
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdlib>
#include <map>
#include <sstream>
#include <stdexcept>

#include "config_fields.h"

namespace ddpm::trainer {

namespace detail {

namespace {
double parse_double(const std::string& text, const std::string& flag) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno == ERANGE) {
    throw std::invalid_argument(flag + ": '" + text + "' is not a number (e.g. " + flag + " 1e-4)");
  }
  return v;
}
}  // namespace

Json parse_flag_value(const Field& f, const std::string& text) {
  const std::string& flag = f.key.flag;
  switch (f.member.index()) {
    case 0: {  // int64_t
      errno = 0;
      char* end = nullptr;
      const long long v = std::strtoll(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || errno == ERANGE) {
        throw std::invalid_argument(flag + ": '" + text + "' is not an integer (e.g. " + flag + " 100)");
      }
      return Json(static_cast<int64_t>(v));
    }
    case 1:
      return Json(parse_double(text, flag));
    case 2:
      if (text == "true" || text == "1" || text == "yes" || text == "on") return Json(true);
      if (text == "false" || text == "0" || text == "no" || text == "off") return Json(false);
      throw std::invalid_argument(flag + ": '" + text + "' is not true or false");
    case 3:
      return Json(text);
    case 4: {
      Json list = Json::array();
      std::stringstream ss(text);
      std::string part;
      while (std::getline(ss, part, ',')) list.push_back(parse_double(part, flag));
      return list;
    }
    default:
      try {
        return Json::parse(text);
      } catch (const nlohmann::json::parse_error& e) {
        throw std::invalid_argument(flag + ": '" + text + "' is not a JSON object (e.g. " + flag +
                                    " '{\"num_channels\": 64}'): " + e.what());
      }
  }
}

}  // namespace detail

namespace {

std::string default_text(const Json& v) {
  if (v.is_string()) return v.get<std::string>().empty() ? "\"\"" : v.get<std::string>();
  if (v.is_array()) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + x.dump();
    return s;
  }
  return v.dump();
}

std::string footer() {
  std::string presets;
  for (const auto& n : preset_names()) presets += "\n  " + n + ": " + preset_json(n).dump();
  return "Settings resolve as: built-in defaults < --preset < --config FILE (JSON with the keys above,\n"
         "e.g. {\"lr\": 1e-4, \"ema_rates\": [0.9999]}) < flags. The defaults shown are the built-in\n"
         "ones; a preset changes them. Presets:" + presets +
         "\nExit codes: 0 done; 75 (EX_TEMPFAIL) stopped by SIGTERM/SIGUSR1 after a checkpoint: requeue\n"
         "the same command to resume; 1 error.";
}

}  // namespace

CliResult parse_train_args(int argc, const char* const* argv, const CliProgram& program) {
  CLI::App app{program.name + ": " + program.about};
  app.set_help_flag("-h,--help", "print this help (every flag with its default) and exit");
  app.footer(footer());
  app.get_formatter()->column_width(34);
  TrainConfig defaults;
  apply_json(defaults, program.defaults, program.name + "'s defaults");
  const auto& fields = detail::fields();
  std::vector<std::string> values(fields.size());
  std::vector<CLI::Option*> options;
  for (size_t i = 0; i < fields.size(); ++i) {
    const auto& f = fields[i];
    CLI::Option* o = app.add_option(f.key.flag, values[i], f.key.help);
    o->group(f.key.group)->type_name(f.type_name)->default_str(default_text(detail::get_value(defaults, f)));
    options.push_back(o);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return {std::nullopt, app.help()};
  } catch (const CLI::ParseError& e) {
    const std::string what = e.what();
    const auto twice = what.find(": At Most 1 required but received");  // CLI11's words for a repeated flag
    if (twice != std::string::npos) {
      throw std::invalid_argument("command line: " + what.substr(0, twice) + " is given more than once; give it once");
    }
    throw std::invalid_argument("command line: " + what + " (run with --help to list the flags)");
  }
  std::map<std::string, std::string> given;  // key -> flag text
  for (size_t i = 0; i < fields.size(); ++i) {
    if (options[i]->count() > 0) given[fields[i].key.key] = values[i];
  }

  TrainConfig c = defaults;
  Json file;
  if (given.count("config_file")) {
    try {
      file = read_json_file(given["config_file"]);
    } catch (const std::runtime_error& e) {
      throw std::invalid_argument(std::string("--config: ") + e.what());
    }
    if (!file.is_object()) throw std::invalid_argument("--config " + given["config_file"] + ": expected a JSON object of settings");
  }
  std::string preset = given.count("preset") ? given["preset"] : "";
  if (preset.empty() && file.is_object() && file.contains("preset") && file["preset"].is_string()) {
    preset = file["preset"].get<std::string>();
  }
  if (!preset.empty()) apply_json(c, preset_json(preset), "preset " + preset);
  if (file.is_object()) apply_json(c, file, "--config " + given["config_file"]);
  for (const auto& [key, text] : given) {
    const detail::Field& f = *detail::find_field(key);
    apply_json(c, Json{{key, detail::parse_flag_value(f, text)}}, "flag " + f.key.flag);
  }
  c.preset = preset;
  validate(c);
  return {c, ""};
}

}  // namespace ddpm::trainer
