// Whole-file reads and durable writes (write to "<path>.tmp-<pid>", fsync, rename, fsync the
// folder), so a reader never sees half a file: .npz samples, checkpoint manifests, config.json.
// POSIX; errors throw std::runtime_error naming the path and errno's text.
#pragma once
#include <string>

namespace ddpm::data {

void fsync_path(const std::string& path);                                     // a file or a folder
void write_file_atomic(const std::string& path, const std::string& content);  // tmp + fsync + rename
std::string read_file(const std::string& path);                               // the whole file

}  // namespace ddpm::data
