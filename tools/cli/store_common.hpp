// Shared by the store verbs: opening the store named by the global options
// and formatting sizes and times as docker does.
#pragma once

#include <cstdint>
#include <boost/program_options.hpp>
#include <string>

#include "cli.hpp"
#include "strata/store.hpp"

namespace strata::cli {

// The store at --root, $STRATA_ROOT or the default root.
store::Store open_store(const GlobalOptions& global);

// -m, -a and -c of commit and import. The -c changes are checked here
// (UsageError before anything is written) and applied by the Dockerfile
// front end when the store writes the config.
store::CommitOptions commit_options(const boost::program_options::variables_map& vm);

// "7.8MB", "512B" (decimal units, as docker prints them).
std::string human_size(std::int64_t bytes);
// "3 hours ago" from an RFC 3339 time; "N/A" when it does not parse.
std::string human_ago(const std::string& rfc3339);
// Pads S with spaces to WIDTH (no truncation).
std::string pad(const std::string& s, std::size_t width);

}  // namespace strata::cli
