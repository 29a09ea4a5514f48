// src/registry/util: small helpers the registry client's files share: its
// own files (credentials, blob source records), text and base64.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace strata::registry {

// Creates DIR and its missing parents with MODE.
void make_dirs(const std::string& dir, unsigned mode);

// Replaces PATH with DATA: written to a staging file of mode 0600 beside it,
// fsynced and renamed into place, so a reader sees the old file or the new
// one. Missing parent directories are created with mode 0700.
void write_private_file(const std::string& path, std::string_view data);

bool is_dir(const std::string& path);
bool is_file(const std::string& path);

std::string lower(std::string_view s);
// S without leading and trailing blanks (spaces, tabs, CR, LF).
std::string trim(std::string_view s);

std::string base64_encode(std::string_view data);
// nullopt when TEXT is not base64 (trailing blanks are ignored).
std::optional<std::string> base64_decode(std::string_view text);
// "USER:PASSWORD" in base64, as Basic authentication and auth.json want it.
std::string basic_token(std::string_view user, std::string_view password);

}  // namespace strata::registry
