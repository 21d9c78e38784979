// The /metrics endpoint on --metrics-addr (a minimal read-only HTTP server) and address
// parsing; see ddpm/monitoring/exporter.h.
#include "ddpm/monitoring/exporter.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
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
  if (hp.host.size() > 2 && hp.host.front() == '[' && hp.host.back() == ']') hp.host = hp.host.substr(1, hp.host.size() - 2);
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

MetricsExporter::MetricsExporter(const std::string& addr, Metrics& metrics) : metrics_(metrics) {
  const auto hp = parse_host_port(addr, "--metrics-addr");
  if (!hp) return;
  host_ = hp->host;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(hp->port);
  if (const int rc = getaddrinfo(host_.c_str(), port.c_str(), &hints, &res); rc != 0)
    throw std::runtime_error("--metrics-addr " + addr + ": cannot resolve host (" + gai_strerror(rc) + ")");
  std::string why = "no address";
  for (addrinfo* a = res; a && fd_ < 0; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 64) == 0) {
      fd_ = fd;
      sockaddr_storage bound{};
      socklen_t len = sizeof bound;
      getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
      port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    } else {
      why = std::strerror(errno);
      close(fd);
    }
  }
  freeaddrinfo(res);
  if (fd_ < 0)
    throw std::runtime_error("--metrics-addr " + addr + ": cannot listen (" + why + "); pick a free port, 0 for any, or none");
  thread_ = std::thread([this] { serve(); });
}

MetricsExporter::~MetricsExporter() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) close(fd_);
}

std::string MetricsExporter::url() const {
  if (fd_ < 0) return "";
  const std::string h = host_ == "0.0.0.0" || host_ == "::" ? "127.0.0.1" : host_;
  return "http://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + std::to_string(port_) + "/metrics";
}

void MetricsExporter::serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;  // wake up every 100 ms to see stop_
    const int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    try {
      answer(client);
    } catch (...) {  // never let a scrape take the job down
    }
    close(client);
  }
}

namespace {

void send_all(int fd, const std::string& s) {
  for (size_t off = 0; off < s.size();) {
    const ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

std::string response(const std::string& status, const std::string& type, const std::string& body, bool head,
                     const std::string& extra = "") {
  return "HTTP/1.0 " + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + extra + "Connection: close\r\n\r\n" + (head ? "" : body);
}

}  // namespace

void MetricsExporter::answer(int client) {
  timeval tv{2, 0};  // a slow or silent client cannot hold the endpoint for long
  setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string req;
  char buf[2048];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 16384) {
    const ssize_t n = recv(client, buf, sizeof buf, 0);
    if (n <= 0) break;
    req.append(buf, static_cast<size_t>(n));
  }
  const auto sp1 = req.find(' ');
  const auto sp2 = sp1 == std::string::npos ? sp1 : req.find(' ', sp1 + 1);
  if (sp2 == std::string::npos) return send_all(client, response("400 Bad Request", "text/plain", "bad request\n", false));
  const std::string method = req.substr(0, sp1);
  std::string path = req.substr(sp1 + 1, sp2 - sp1 - 1);
  path = path.substr(0, path.find('?'));
  if (path != "/metrics") return send_all(client, response("404 Not Found", "text/plain", "only /metrics\n", false));
  if (method != "GET" && method != "HEAD")
    return send_all(client, response("405 Method Not Allowed", "text/plain", "read only: GET /metrics\n", false, "Allow: GET, HEAD\r\n"));
  metrics_.update_process_memory();
  send_all(client, response("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics_.serialize(), method == "HEAD"));
}

}  // namespace ddpm::monitoring
