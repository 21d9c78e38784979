// Pushgateway client on libcurl (with timeouts, so a dead gateway never stalls a job): PUT of the
// registry's exposition text to /metrics/job/<job>/run_id/<id>; see ddpm/monitoring/exporter.h.
#include <curl/curl.h>

#include <mutex>
#include <stdexcept>

#include "ddpm/monitoring/exporter.h"

namespace ddpm::monitoring {
namespace {

// Pushgateway grouping-key values with characters outside a safe set use "<label>@base64/<b64url>".
std::string grouping_segment(const std::string& label, const std::string& value) {
  const bool safe = !value.empty() && value.find_first_not_of(
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == std::string::npos;
  if (safe) return label + "/" + value;
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  unsigned buf = 0;
  int bits = 0;
  for (unsigned char ch : value) {
    buf = (buf << 8) | ch;
    bits += 8;
    while (bits >= 6) out += abc[(buf >> (bits -= 6)) & 63];
  }
  if (bits > 0) out += abc[(buf << (6 - bits)) & 63];
  while (out.size() % 4) out += '=';
  return label + "@base64/" + (out.empty() ? "=" : out);
}

size_t discard(char*, size_t size, size_t n, void*) { return size * n; }

// Returns the HTTP status, or -curl_code when the request did not complete.
int http_put(const std::string& url, const std::string& body, long timeout_ms) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* curl = curl_easy_init();
  if (!curl) return -CURLE_FAILED_INIT;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: text/plain; version=0.0.4");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
  const CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return rc == CURLE_OK ? static_cast<int>(status) : -static_cast<int>(rc);
}

}  // namespace

Pushgateway::Pushgateway(PushgatewayOptions options, Metrics& metrics) : opt_(std::move(options)), metrics_(metrics) {
  const auto hp = parse_host_port(opt_.address, "--pushgateway");
  if (!hp) return;
  if (hp->port == 0) throw std::invalid_argument("--pushgateway " + opt_.address + ": port 0 is not a gateway's port");
  if (opt_.interval.count() <= 0) throw std::invalid_argument("Pushgateway: push interval must be positive");
  if (!opt_.warn) opt_.warn = stderr_warn();
  enabled_ = true;
  url_ = "http://" + hp->host + ":" + std::to_string(hp->port) + "/metrics/" + grouping_segment("job", opt_.job) +
         "/" + grouping_segment("run_id", metrics_.run_id());
  thread_ = std::thread([this] { loop(); });
}

Pushgateway::~Pushgateway() {
  // Reached without finish(): the job is unwinding from an error (or forgot); report failure.
  if (enabled_) finish(1);
}

int Pushgateway::push_now() {
  if (!enabled_) return 0;
  std::lock_guard<std::mutex> one_at_a_time(push_mu_);
  int status = 0;
  try {
    metrics_.update_process_memory();
    status = http_put(url_, metrics_.serialize(), static_cast<long>(opt_.timeout.count()));
  } catch (const std::exception& e) {
    status = -CURLE_FAILED_INIT;
    opt_.warn(std::string("push to ") + url_ + " failed: " + e.what());
  }
  const bool ok = status >= 200 && status < 300;
  {
    std::lock_guard<std::mutex> lk(mu_);
    (ok ? ok_ : failed_)++;
  }
  if (!ok) {
    const std::string why = status < 0 ? std::string("unreachable: ") + curl_easy_strerror(static_cast<CURLcode>(-status))
                                       : "HTTP status " + std::to_string(status);
    opt_.warn("Pushgateway push to " + url_ + " failed (" + why + "); training continues");
  }
  return status;
}

void Pushgateway::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    if (cv_.wait_for(lk, opt_.interval, [this] { return stop_; })) break;
    lk.unlock();
    push_now();
    lk.lock();
  }
}

int Pushgateway::finish(int exit_status) {
  if (!enabled_) return 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (finished_) return 0;
    finished_ = true;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  metrics_.set_exit_status(exit_status);
  return push_now();
}

int Pushgateway::pushes_ok() const {
  std::lock_guard<std::mutex> lk(mu_);
  return ok_;
}

int Pushgateway::pushes_failed() const {
  std::lock_guard<std::mutex> lk(mu_);
  return failed_;
}

}  // namespace ddpm::monitoring
