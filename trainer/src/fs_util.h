// File-system helpers of the trainer (private): durable writes (fsync of files and folders,
// write-to-temp-then-rename) and SHA-256 checksums. POSIX; errors throw std::runtime_error
// naming the path and errno's text.
#pragma once
#include <string>

namespace ddpm::trainer::fs_util {

void fsync_path(const std::string& path);       // a file or a folder
void write_file_atomic(const std::string& path, const std::string& content);  // tmp + rename
std::string read_file(const std::string& path);
std::string sha256_file(const std::string& path);  // lowercase hex, 64 characters

}  // namespace ddpm::trainer::fs_util
