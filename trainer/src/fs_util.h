// File-system helpers of the trainer (private): SHA-256 checksums of checkpoint files (OpenSSL).
// Whole-file reads and durable writes are ddpm/data/files.h's. Errors throw std::runtime_error
// naming the path.
#pragma once
#include <string>

namespace ddpm::trainer::fs_util {

std::string sha256_file(const std::string& path);  // lowercase hex, 64 characters

}  // namespace ddpm::trainer::fs_util
