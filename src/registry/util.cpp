// src/registry/util: staged private files, text and base64 (OpenSSL).
#include "util.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <random>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/fd.hpp"

namespace strata::registry {

void make_dirs(const std::string& dir, unsigned mode) {
  for (std::size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) throw_errno("create directory " + quote(part));
  }
}

void write_private_file(const std::string& path, std::string_view data) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (!dir.empty()) make_dirs(dir, 0700);
  std::string stage = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}());
  UniqueFd fd(::open(stage.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) throw_errno("create " + quote(stage));
  try {
    write_all(fd.get(), data, quote(stage));
    if (::fsync(fd.get()) != 0) throw_errno("sync " + quote(stage));
    fd.reset();
    if (::rename(stage.c_str(), path.c_str()) != 0) throw_errno("rename into " + quote(path));
  } catch (...) {
    ::unlink(stage.c_str());
    throw;
  }
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

std::string base64_encode(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  std::string s = trim(in);
  if (s.empty() || s.size() % 4 != 0) return std::nullopt;
  std::string out(3 * s.size() / 4 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(s.data()),
                          static_cast<int>(s.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the padding as zero bytes.
  std::size_t pad = s[s.size() - 1] == '=' ? (s[s.size() - 2] == '=' ? 2 : 1) : 0;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

std::string basic_token(std::string_view user, std::string_view password) {
  return base64_encode(std::string(user) + ":" + std::string(password));
}

}  // namespace strata::registry
