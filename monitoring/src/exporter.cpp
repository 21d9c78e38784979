// The /metrics endpoint on --metrics-addr and address parsing; see ddpm/monitoring/exporter.h.
#include "ddpm/monitoring/exporter.h"

#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <iostream>
#include <stdexcept>

namespace ddpm::monitoring {

std::optional<HostPort> parse_host_port(const std::string& value, const std::string& flag) {
  if (value.empty() || value == "none") return std::nullopt;
  const auto colon = value.rfind(':');
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument(flag + " '" + value + "': " + why +
                                 " (expected host:port such as 127.0.0.1:9464, port 0 for a free port, or none)");
  };
  if (colon == std::string::npos || colon == 0) throw bad("no host:port");
  HostPort hp{value.substr(0, colon), 0};
  const std::string port = value.substr(colon + 1);
  if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5) throw bad("bad port");
  hp.port = std::stoi(port);
  if (hp.port > 65535) throw bad("port above 65535");
  return hp;
}

WarnFn stderr_warn() {
  return [](const std::string& msg) noexcept {
    try {
      std::cerr << "[ddpm monitoring] warning: " << msg << std::endl;
    } catch (...) {
    }
  };
}

MetricsExporter::MetricsExporter(const std::string& addr, const Metrics& metrics) {
  const auto hp = parse_host_port(addr, "--metrics-addr");
  if (!hp) return;
  host_ = hp->host;
  try {
    // civetweb: only GET /metrics is answered with data; no document root, no other handlers.
    exposer_ = std::make_unique<prometheus::Exposer>(host_ + ":" + std::to_string(hp->port), /*num_threads=*/1);
  } catch (const std::exception& e) {
    throw std::runtime_error("--metrics-addr " + addr + ": cannot listen (" + e.what() +
                             "); pick a free port, port 0 for any, or none");
  }
  exposer_->RegisterCollectable(metrics.registry());
  const auto ports = exposer_->GetListeningPorts();
  port_ = ports.empty() ? hp->port : ports.front();
}

MetricsExporter::~MetricsExporter() = default;

std::string MetricsExporter::url() const {
  if (!exposer_) return "";
  const std::string h = host_ == "0.0.0.0" ? "127.0.0.1" : host_;
  return "http://" + h + ":" + std::to_string(port_) + "/metrics";
}

}  // namespace ddpm::monitoring
