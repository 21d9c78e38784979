// Whole-file reads and durable writes (temp file, fsync, rename); see ddpm/data/files.h.
#include "ddpm/data/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace ddpm::data {

namespace {
[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw std::runtime_error(path + ": " + what + " failed: " + std::strerror(errno));
}
}  // namespace

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open for fsync", path);
  if (::fsync(fd) != 0 && errno != EINVAL) {  // EINVAL: the file system cannot sync folders
    const int saved = errno;
    ::close(fd);
    errno = saved;
    fail("fsync", path);
  }
  ::close(fd);
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("create (check that the folder exists and is writable)", tmp);
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      std::remove(tmp.c_str());
      errno = saved;
      fail("write (disk full?)", tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int saved = errno;
    ::close(fd);
    std::remove(tmp.c_str());
    errno = saved;
    fail("fsync", tmp);
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    std::remove(tmp.c_str());
    errno = saved;
    fail("rename to " + path, tmp);
  }
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  fsync_path(parent.empty() ? "." : parent.string());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open for reading: " + std::strerror(errno) + " (check the path)");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace ddpm::data
