// Metric names, types and labels through prometheus-cpp's text serializer; the /metrics endpoint
// (GET only, port 0); --metrics-addr parsing; Pushgateway failures are warnings, never throws.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <mutex>
#include <sstream>
#include <regex>
#include <string>
#include <vector>

#include "ddpm/monitoring/exporter.h"
#include "ddpm/monitoring/metrics.h"
#include "testing/testing.h"

namespace {
using namespace ddpm::monitoring;

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

// A sample `name{labels} value` with exactly these labels, in any order.
bool has_sample(const std::string& text, const std::string& name, std::map<std::string, std::string> labels,
                const std::string& value) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) != 0) continue;
    const auto close = line.find("} ");
    if (close == std::string::npos || line.substr(close + 2) != value) continue;
    std::map<std::string, std::string> got;
    const std::regex kv("([a-zA-Z_]+)=\"([^\"]*)\"");
    const std::string body = line.substr(name.size() + 1, close - name.size() - 1);
    for (auto it = std::sregex_iterator(body.begin(), body.end(), kv); it != std::sregex_iterator(); ++it)
      got[(*it)[1]] = (*it)[2];
    if (got == labels) return true;
  }
  return false;
}

Metrics& filled(Metrics& m) {
  m.set_loss_terms(0.25, 0.2, 0.05);
  for (int q = 0; q < 4; ++q) m.set_loss_quartile(q, 0.1 * (q + 1), 0.05, 0.01);
  m.add_steps(3);
  m.add_images(3 * 128);
  m.set_images_per_second(512);
  m.observe_phase(StepPhase::kForwardBackward, 0.03);
  m.observe_phase(StepPhase::kForwardBackward, 0.3);
  m.add_rank_wait(1, 0.5, 0.25);
  m.set_grad_norm(1.5);
  m.set_learning_rate(1e-4);
  m.set_loss_scale(65536);
  m.add_nonfinite_steps_skipped(1);
  m.set_checkpoint(1.7e9, 2.5);
  m.set_fid("0.9999", "inception-v3", 50000, 3.17);
  m.set_bits_per_dim("0.9999", 1000, 2.94);
  m.set_world_size(2);
  m.set_build_info({"0.1.0", "2.11.0", "cpu"});
  m.set_gpu_memory_bytes(0, 1024);
  m.set_gpu_memory(1, {2048, 4096, 3072});
  m.update_process_memory();
  return m;
}

TEST(Metrics, NamesTypesAndLabelsInTheExposition) {
  Metrics m("run-1");
  const std::string t = filled(m).serialize();
  const std::vector<std::pair<std::string, std::string>> types = {
      {"ddpm_loss", "gauge"}, {"ddpm_mse", "gauge"}, {"ddpm_vb", "gauge"}, {"ddpm_steps_total", "counter"},
      {"ddpm_images_total", "counter"}, {"ddpm_images_per_second", "gauge"}, {"ddpm_step_phase_seconds", "histogram"},
      {"ddpm_rank_data_wait_seconds_total", "counter"}, {"ddpm_rank_allreduce_wait_seconds_total", "counter"},
      {"ddpm_grad_norm", "gauge"}, {"ddpm_learning_rate", "gauge"}, {"ddpm_loss_scale", "gauge"},
      {"ddpm_nonfinite_steps_skipped_total", "counter"}, {"ddpm_last_checkpoint_timestamp_seconds", "gauge"},
      {"ddpm_checkpoint_write_seconds", "gauge"}, {"ddpm_fid", "gauge"}, {"ddpm_bpd", "gauge"},
      {"ddpm_world_size", "gauge"}, {"ddpm_build_info", "gauge"}, {"ddpm_gpu_memory_allocated_bytes", "gauge"},
      {"ddpm_gpu_memory_reserved_bytes", "gauge"}, {"ddpm_gpu_memory_peak_allocated_bytes", "gauge"},
      {"ddpm_process_resident_memory_bytes", "gauge"}, {"ddpm_start_time_seconds", "gauge"}};
  for (const auto& [name, type] : types) EXPECT_TRUE(has_line(t, "# TYPE " + name + " " + type)) << name;
  // Every sample carries run_id.
  std::istringstream in(t);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != '#') {
      EXPECT_NE(line.find("run_id=\"run-1\""), std::string::npos) << line;
    }
  const std::string r = "run-1";
  EXPECT_TRUE(has_sample(t, "ddpm_loss", {{"quartile", "q2"}, {"run_id", r}}, "0.3")) << t;
  EXPECT_TRUE(has_sample(t, "ddpm_loss", {{"run_id", r}}, "0.25"));
  EXPECT_TRUE(has_sample(t, "ddpm_vb", {{"quartile", "q3"}, {"run_id", r}}, "0.01"));
  EXPECT_TRUE(has_sample(t, "ddpm_steps_total", {{"run_id", r}}, "3"));
  EXPECT_TRUE(has_sample(t, "ddpm_images_total", {{"run_id", r}}, "384"));
  EXPECT_TRUE(has_sample(t, "ddpm_fid", {{"ema_rate", "0.9999"}, {"extractor", "inception-v3"}, {"run_id", r}, {"samples", "50000"}}, "3.17"));
  EXPECT_TRUE(has_sample(t, "ddpm_bpd", {{"ema_rate", "0.9999"}, {"run_id", r}, {"samples", "1000"}}, "2.94"));
  EXPECT_TRUE(has_sample(t, "ddpm_rank_allreduce_wait_seconds_total", {{"rank", "1"}, {"run_id", r}}, "0.25"));
  EXPECT_TRUE(has_sample(t, "ddpm_rank_data_wait_seconds_total", {{"rank", "1"}, {"run_id", r}}, "0.5"));
  EXPECT_TRUE(has_sample(t, "ddpm_gpu_memory_allocated_bytes", {{"device", "0"}, {"run_id", r}}, "1024"));
  EXPECT_TRUE(has_sample(t, "ddpm_gpu_memory_allocated_bytes", {{"device", "1"}, {"run_id", r}}, "2048"));
  EXPECT_TRUE(has_sample(t, "ddpm_gpu_memory_reserved_bytes", {{"device", "1"}, {"run_id", r}}, "4096"));
  EXPECT_TRUE(has_sample(t, "ddpm_gpu_memory_peak_allocated_bytes", {{"device", "1"}, {"run_id", r}}, "3072"));
  EXPECT_TRUE(has_sample(t, "ddpm_build_info", {{"device", "cpu"}, {"run_id", r}, {"torch_version", "2.11.0"}, {"version", "0.1.0"}}, "1"));
  EXPECT_TRUE(has_sample(t, "ddpm_step_phase_seconds_count", {{"phase", "forward_backward"}, {"run_id", r}}, "2"));
  EXPECT_TRUE(has_sample(t, "ddpm_step_phase_seconds_bucket", {{"le", "0.05"}, {"phase", "forward_backward"}, {"run_id", r}}, "1"));
  EXPECT_TRUE(has_sample(t, "ddpm_step_phase_seconds_bucket", {{"le", "+Inf"}, {"phase", "forward_backward"}, {"run_id", r}}, "2"));
  EXPECT_TRUE(has_sample(t, "ddpm_nonfinite_steps_skipped_total", {{"run_id", r}}, "1"));
  EXPECT_TRUE(has_sample(t, "ddpm_last_checkpoint_timestamp_seconds", {{"run_id", r}}, "1700000000"));
  EXPECT_FALSE(has_line(t, "# TYPE ddpm_exit_status gauge")) << "exit status appears only when set at exit";
  const std::regex rss("ddpm_process_resident_memory_bytes\\{run_id=\"run-1\"\\} ([0-9.e+]+)");
  std::smatch mt;
  ASSERT_TRUE(std::regex_search(t, mt, rss));
  EXPECT_GT(std::stod(mt[1]), 1e6) << "resident memory of a test process is more than 1 MB";
}

// A task's own terms (the classifier's accuracy): ddpm_task_term{term, quartile}, absent until set.
TEST(Metrics, TaskTermsByQuartile) {
  Metrics m("run-2");
  EXPECT_FALSE(has_line(filled(m).serialize(), "# TYPE ddpm_task_term gauge")) << "a diffusion run has none";
  m.set_task_term("accuracy", -1, 0.625);
  for (int q = 0; q < 4; ++q) m.set_task_term("accuracy", q, 0.25 * (q + 1));
  const std::string t = m.serialize();
  EXPECT_TRUE(has_line(t, "# TYPE ddpm_task_term gauge")) << t;
  EXPECT_TRUE(has_sample(t, "ddpm_task_term", {{"run_id", "run-2"}, {"term", "accuracy"}}, "0.625")) << t;
  EXPECT_TRUE(has_sample(t, "ddpm_task_term", {{"quartile", "q1"}, {"run_id", "run-2"}, {"term", "accuracy"}}, "0.5"));
  EXPECT_THROW(m.set_task_term("accuracy", 4, 0.0), std::invalid_argument);
}

TEST(Metrics, RejectsBadArguments) {
  EXPECT_THROW(Metrics(""), std::invalid_argument);
  Metrics m("r");
  EXPECT_THROW(m.set_loss_quartile(4, 0, 0, 0), std::invalid_argument);
  EXPECT_THROW(m.set_fid("0.9999", "", 10, 1.0), std::invalid_argument);
}

TEST(MetricsAddr, Parsing) {
  EXPECT_FALSE(parse_host_port("none", "--metrics-addr").has_value());
  const auto a = parse_host_port("0.0.0.0:9464", "--metrics-addr");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->host, "0.0.0.0");
  EXPECT_EQ(a->port, 9464);
  for (const char* bad : {"9464", "host:", ":80", "h:99999", "h:x1"})
    EXPECT_THROW(parse_host_port(bad, "--metrics-addr"), std::invalid_argument) << bad;
}

// One raw HTTP/1.0 request on 127.0.0.1:port; returns the whole response ("" if none).
std::string http(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    (void)!write(fd, request.data(), request.size());
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

TEST(MetricsExporter, ServesGetMetricsOnAFreePortAndNothingElse) {
  Metrics m("run-http");
  filled(m);
  MetricsExporter ex("127.0.0.1:0", m);
  ASSERT_TRUE(ex.enabled());
  ASSERT_GT(ex.port(), 0);
  EXPECT_EQ(ex.url(), "http://127.0.0.1:" + std::to_string(ex.port()) + "/metrics");
  const std::string get = http(ex.port(), "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(get.find(" 200 "), std::string::npos) << get.substr(0, 200);
  EXPECT_TRUE(has_sample(get, "ddpm_steps_total", {{"run_id", "run-http"}}, "3")) << get.substr(0, 300);
  EXPECT_NE(get.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(http(ex.port(), "GET /metrics HTTP/1.0\r\n\r\n").find(" 200 "), std::string::npos) << "serves repeatedly";
  for (const std::string req : {"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", "PUT /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
                                "DELETE /metrics HTTP/1.0\r\n\r\n", "GET / HTTP/1.0\r\n\r\n", "GET /etc/passwd HTTP/1.0\r\n\r\n",
                                "GET /../../etc/passwd HTTP/1.0\r\n\r\n"}) {
    const std::string r = http(ex.port(), req);
    EXPECT_EQ(r.find("ddpm_"), std::string::npos) << req << " -> " << r.substr(0, 200);
    EXPECT_EQ(r.find("root:"), std::string::npos) << req;
    EXPECT_EQ(r.find(" 200 "), std::string::npos) << req << " -> " << r.substr(0, 200);
  }
  MetricsExporter off("none", m);
  EXPECT_FALSE(off.enabled());
  EXPECT_EQ(off.port(), 0);
  EXPECT_THROW(MetricsExporter(std::string("127.0.0.1:") + std::to_string(ex.port()), m), std::runtime_error);
}

TEST(Pushgateway, UnreachableGatewayIsAWarning) {
  Metrics m("run-push");
  // A port nobody listens on: bind one, read its number, close it.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int dead_port = ntohs(addr.sin_port);
  close(fd);
  std::vector<std::string> warnings;
  std::mutex mu;
  {
    PushgatewayOptions o;
    o.address = "127.0.0.1:" + std::to_string(dead_port);
    o.interval = std::chrono::milliseconds(50);
    o.timeout = std::chrono::milliseconds(500);
    o.warn = [&](const std::string& w) { std::lock_guard<std::mutex> lk(mu); warnings.push_back(w); };
    Pushgateway pg(o, m);
    ASSERT_TRUE(pg.enabled());
    EXPECT_NE(pg.url().find("/metrics/job/ddpm/run_id/run-push"), std::string::npos) << pg.url();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_LT(pg.finish(0), 0) << "negative curl code expected";
    EXPECT_EQ(pg.pushes_ok(), 0);
    EXPECT_GE(pg.pushes_failed(), 2) << "background pushes and the final push were attempted";
  }
  ASSERT_FALSE(warnings.empty());
  EXPECT_NE(warnings.front().find("unreachable"), std::string::npos) << warnings.front();
  EXPECT_NE(m.serialize().find("ddpm_exit_status{run_id=\"run-push\"} 0"), std::string::npos);
  // Destroyed without finish(): the final push reports exit status 1.
  {
    PushgatewayOptions o;
    o.address = "127.0.0.1:" + std::to_string(dead_port);
    o.warn = [](const std::string&) {};
    Pushgateway pg(o, m);
  }
  EXPECT_NE(m.serialize().find("ddpm_exit_status{run_id=\"run-push\"} 1"), std::string::npos);
  PushgatewayOptions off;
  off.address = "none";
  EXPECT_FALSE(Pushgateway(off, m).enabled());
}

}  // namespace
