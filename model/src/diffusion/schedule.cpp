// Beta schedules: linear, cosine, sigmoid and betas from a file; see ddpm/model/diffusion/schedule.h.
#include "ddpm/model/diffusion/schedule.h"

#include <cmath>
#include <fstream>
#include <numbers>
#include <sstream>
#include <stdexcept>

namespace ddpm::diffusion {

namespace {

constexpr const char* kFilePrefix = "file:";

std::vector<double> linear_betas(int64_t T) {
  const double scale = 1000.0 / static_cast<double>(T);
  const double beta_start = scale * 0.0001, beta_end = scale * 0.02;
  if (beta_end >= 1.0) {
    throw std::invalid_argument("schedule 'linear' with T=" + std::to_string(T) + " gives beta_T = " +
                                std::to_string(beta_end) +
                                " >= 1 (it scales 0.02 by 1000/T); use T >= 21 or the cosine schedule");
  }
  // numpy.linspace: start + i * step, the last value exactly `end`.
  std::vector<double> betas(T);
  const double step = (beta_end - beta_start) / static_cast<double>(T - 1);
  for (int64_t i = 0; i < T; ++i) betas[i] = beta_start + static_cast<double>(i) * step;
  betas[T - 1] = beta_end;
  return betas;
}

double cosine_alpha_bar(double t) {
  const double s = 0.008;
  const double c = std::cos((t + s) / (1.0 + s) * std::numbers::pi / 2.0);
  return c * c;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

double sigmoid_alpha_bar(double t) {
  const double start = -3.0, end = 3.0, tau = 1.0;
  const double v_start = sigmoid(start / tau), v_end = sigmoid(end / tau);
  return (v_end - sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start);
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

std::string known_schedule_names() { return "linear, cosine, sigmoid, file:PATH"; }

std::vector<double> betas_for_alpha_bar(int64_t T, const std::function<double(double)>& alpha_bar,
                                        double max_beta) {
  std::vector<double> betas(T);
  for (int64_t i = 0; i < T; ++i) {
    const double t1 = static_cast<double>(i) / static_cast<double>(T);
    const double t2 = static_cast<double>(i + 1) / static_cast<double>(T);
    betas[i] = std::min(1.0 - alpha_bar(t2) / alpha_bar(t1), max_beta);
  }
  return betas;
}

void check_betas(const std::vector<double>& betas, const std::string& what) {
  if (betas.size() < 2) {
    throw std::invalid_argument(what + ": " + std::to_string(betas.size()) +
                                " diffusion steps; at least 2 are needed");
  }
  for (size_t i = 0; i < betas.size(); ++i) {
    if (!(betas[i] > 0.0 && betas[i] < 1.0)) {
      std::ostringstream os;
      os.precision(17);
      os << what << ": beta[" << i << "] = " << betas[i] << " is outside (0, 1)";
      throw std::invalid_argument(os.str());
    }
  }
}

std::vector<double> read_betas_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("betas file '" + path + "': cannot open it; check the path");
  std::vector<double> betas;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    const std::string s = trim(line);
    if (s.empty() || s[0] == '#') continue;
    size_t used = 0;
    double v = 0.0;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size()) {
      throw std::invalid_argument("betas file '" + path + "' line " + std::to_string(lineno) + ": '" + s +
                                  "' is not a number; expected one beta per line");
    }
    if (!(v > 0.0 && v < 1.0)) {
      throw std::invalid_argument("betas file '" + path + "' line " + std::to_string(lineno) + ": beta " +
                                  s + " is outside (0, 1)");
    }
    betas.push_back(v);
  }
  return betas;
}

std::vector<double> get_named_beta_schedule(const std::string& name, int64_t T) {
  std::vector<double> betas;
  if (name.rfind(kFilePrefix, 0) == 0) {
    const std::string path = name.substr(std::string(kFilePrefix).size());
    betas = read_betas_file(path);
    if (T > 0 && static_cast<int64_t>(betas.size()) != T) {
      throw std::invalid_argument("betas file '" + path + "' has " + std::to_string(betas.size()) +
                                  " betas but " + std::to_string(T) +
                                  " steps were asked for; give the file's count as the number of steps");
    }
  } else {
    if (T < 2) {
      throw std::invalid_argument("schedule '" + name + "': " + std::to_string(T) +
                                  " diffusion steps; at least 2 are needed");
    }
    if (name == "linear") {
      betas = linear_betas(T);
    } else if (name == "cosine") {
      betas = betas_for_alpha_bar(T, cosine_alpha_bar);
    } else if (name == "sigmoid") {
      betas = betas_for_alpha_bar(T, sigmoid_alpha_bar);
    } else {
      throw std::invalid_argument("unknown beta schedule '" + name + "'; known: " + known_schedule_names());
    }
  }
  check_betas(betas, "schedule '" + name + "'");
  return betas;
}

}  // namespace ddpm::diffusion
