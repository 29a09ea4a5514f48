// Shared by the store verbs: opening the store named by the global options
// and formatting sizes and times as docker does.
#pragma once

#include <cstdint>
#include <functional>
#include <boost/program_options.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cli.hpp"
#include "strata/fd.hpp"
#include "strata/sandbox.hpp"
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
// "2024-05-01 12:00:00 +0000 UTC" (docker's CreatedAt, in local time) from
// an RFC 3339 time; the text itself when it does not parse.
std::string local_time(const std::string& rfc3339);
// S cut to WIDTH characters, the last one "…", unless NO_TRUNC.
std::string ellipsis(const std::string& s, std::size_t width, bool no_trunc);

// The --filter KEY=VALUE options of VERB, checked against KEYS (UsageError
// naming the verb and the keys it takes for anything else).
std::vector<std::pair<std::string, std::string>> filters(const boost::program_options::variables_map& vm,
                                                         const char* verb, const std::vector<std::string>& keys);
// Whether NAME matches the glob PATTERN as docker's reference filter does
// ('*' and '?' do not match '/').
bool glob_match(const std::string& pattern, const std::string& name);

// The value of --format, "" when not given.
std::string format_option(const boost::program_options::variables_map& vm);

// The stratafs program: $STRATA_MOUNT_PROGRAM, else the one next to this
// executable, else "stratafs" on PATH.
std::string mount_program();

// Asks WARNING's question on standard error and reads the answer from
// standard input, unless FORCE. A closed or non-"y" answer removes nothing
// and says so (Error, exit 1): a script that forgot -f learns it at once.
void confirm(const std::string& verb, const std::string& warning, bool force);

// Runs the subcommand of a group verb ("image prune", "volume ls") named by
// ARGS[0] among SUBS; no subcommand: the list of them and exit 2.
int dispatch(const char* group, const std::vector<std::pair<const char*, VerbFn>>& subs, const GlobalOptions& g,
             const std::vector<std::string>& args);

// sandbox::FillVolume for run, create, start and restart: a named volume
// whose _data is empty gets a copy of what the container's root has at the
// target (a directory: its entries, owners, modes, times; the volume takes
// the directory's own owner and mode), as docker fills a new volume. Nothing
// is followed out of the container's root or out of the volume.
void fill_new_volume(int root, const sandbox::BindMount& volume);

// A staging directory in the store for a stream (load and import from
// standard input, save and build --output to standard output); named
// VERB-PID-... so that prune removes it when this process dies first.
TempDir stream_staging(const store::Store& store, const std::string& verb);

// Runs WRITE(fd, name) on a file staged beside PATH and renames it over
// PATH, so a reader sees the whole file or the old one; a failure leaves no
// staged file. A PATH that exists and is not a regular file (/dev/null, a
// FIFO, /dev/fd/N) is written through, never replaced. WHAT starts messages.
void write_file_staged(const std::string& path, const std::function<void(int fd, const std::string& where)>& write,
                       const std::string& what);

// Copies everything readable from FROM to TO; returns the byte count.
std::int64_t copy_stream(int from, int to, const std::string& from_name, const std::string& to_name);

}  // namespace strata::cli
