// Beta schedules of the forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I):
// linear (Ho et al. 2020, rescaled to T), cosine (Nichol & Dhariwal 2021), sigmoid, and betas
// read from a text file. Plain float64 vectors; GaussianDiffusion derives everything else.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ddpm::diffusion {

// The names get_named_beta_schedule knows, for help texts: "linear, cosine, sigmoid, file:PATH".
std::string known_schedule_names();

// Betas for T steps:
//   "linear":    evenly from scale*1e-4 to scale*0.02, scale = 1000/T (T = 1000 gives Ho et al.'s
//                schedule; other T keep the same total noise). Needs T >= 21 so that beta_T < 1.
//   "cosine":    alpha_bar(t) = cos((t/T + s)/(1 + s) * pi/2)^2, s = 0.008, betas clipped at 0.999.
//   "sigmoid":   alpha_bar(t) = (sigmoid(end/tau) - sigmoid((t/T (end - start) + start)/tau)) /
//                (sigmoid(end/tau) - sigmoid(start/tau)), start = -3, end = 3, tau = 1, clipped at
//                0.999 (Chen 2023, "On the importance of noise scheduling for diffusion models").
//                We use this definition, on alpha_bar like the cosine, rather than a sigmoid-shaped
//                beta curve (GeoDiff): it is independent of T, so respacing keeps its shape, and it
//                is the sigmoid schedule current work compares against.
//   "file:PATH": one beta per line (blank lines and lines starting with '#' ignored); the count
//                must equal T, or T <= 0 takes the file's count.
// Throws std::invalid_argument for an unknown name, T < 2, or betas outside (0, 1).
std::vector<double> get_named_beta_schedule(const std::string& name, int64_t T);

// Betas from a text file, as "file:PATH" above; errors name the file and the line.
std::vector<double> read_betas_file(const std::string& path);

// beta_i = min(1 - alpha_bar((i + 1)/T) / alpha_bar(i/T), max_beta) for i = 0..T-1.
std::vector<double> betas_for_alpha_bar(int64_t T, const std::function<double(double)>& alpha_bar,
                                        double max_beta = 0.999);

// Throws std::invalid_argument naming `what` unless every beta is in (0, 1) and there are >= 2.
void check_betas(const std::vector<double>& betas, const std::string& what);

}  // namespace ddpm::diffusion
