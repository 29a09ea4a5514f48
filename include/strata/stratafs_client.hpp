// strata::fs client side: how strata's own programs start stratafs(1).
//
// Contract. Every program of strata that mounts a union (the sandbox's
// container root, the build's step roots, `strata mount`, `strata cp` and
// `strata export`) goes through this header; nothing else writes a stratafs
// `-o` string or looks for the stratafs binary.
//
// - format_mount_options() writes the `-o` value that stratafs's own parser
//   (parse_command_line, src/fs/options.cpp) reads back as exactly the
//   fields of a StratafsMount: lower directories joined with ':' and each
//   ':' and '\' in them escaped with '\'; upperdir= and workdir= verbatim
//   (the parser takes their values as they are). What that grammar cannot
//   carry is refused with a one-line Error naming the path: a ',' anywhere
//   (the option list has no escape for it), an empty path, an upper without
//   a work dir or the reverse, no lower directory, more than
//   kMaxLowerLayers lowers.
// - find_stratafs() names the binary: the stratafs next to the running
//   executable, else "stratafs" (looked up on PATH when run).
// - mount_stratafs() runs it and returns once the mount is up (stratafs
//   detaches only when the kernel has the mount), or throws one Error with
//   stratafs's own message folded onto the line.
// - unmount_stratafs() ends a mount (umount2, or fusermount3 -u where the
//   caller may not unmount) and, given the work directory, returns only once
//   the daemon has let go of it: the kernel detaches the mount at once, but
//   the daemon may still be finishing its last writes, and until it exits a
//   new mount of the same upper is refused. lock_workdir() is that lock, as
//   the daemon takes it (flock LOCK_EX on the work directory).
// - is_mount_point() reads /proc/self/mountinfo, whose mount point field the
//   kernel octal-escapes (\040 for a space), and compares it unescaped with
//   the real path of its argument.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "strata/error.hpp"

namespace strata::fs {

// One union mount as strata's programs ask for it.
struct StratafsMount {
  std::vector<std::string> lowerdirs;  // topmost first; at least one
  std::string upperdir;                // empty: no writable layer
  std::string workdir;                 // with upperdir, and only then
  bool read_only = false;              // -o ro
  bool allow_other = false;            // -o allow_other: other users (and the container's) may use it
  bool volatile_upper = false;         // -o volatile: the upper is never synced
  int owner_pid = 0;                   // -o owner=PID: the mount ends with PID (0: it outlives us)
};

// DIR with ':' and '\' escaped by '\', as one entry of a lowerdir= list (and
// of overlayfs's); ',' is not checked here: format_mount_options refuses it.
std::string escape_lower_dir(std::string_view dir);

// The `-o` value for M (see the contract above). Throws Error.
std::string format_mount_options(const StratafsMount& m);

// The stratafs program to run: the one beside /proc/self/exe when it is
// executable, else "stratafs".
std::string find_stratafs();

// Runs `PROGRAM -o OPTIONS MOUNTPOINT` (PATH is searched when PROGRAM has no
// '/') and waits for it to exit. On success MOUNTPOINT shows the union and
// whatever stratafs wrote to stderr is passed on to ours; otherwise throws
// Error(CODE) "stratafs could not mount WHAT: REASON", REASON being
// stratafs's own lines (or why PROGRAM could not run) on one line.
void mount_stratafs(const std::string& program, const StratafsMount& m, const std::string& mountpoint,
                    const std::string& what, ExitCode code = ExitCode::failure);

// Unmounts MOUNTPOINT (retrying for a second while it is busy), then, when
// WORKDIR is not empty, waits up to 60 s until no daemon holds WORKDIR's
// lock. Throws Error naming MOUNTPOINT and the reason.
void unmount_stratafs(const std::string& mountpoint, const std::string& workdir = {});

// For cleanup paths: unmount_stratafs(MOUNTPOINT), and where that fails
// (still busy, or not a mount) a lazy detach (umount2 MNT_DETACH, or
// fusermount3 -u -z), so that the directory can be removed. Never throws.
void detach_stratafs(const std::string& mountpoint) noexcept;

// Takes the exclusive flock on the work directory open at FD, retrying for
// up to WAIT_MS while another holder has it. False (errno from flock) when
// it could not.
bool lock_workdir(int fd, int wait_ms);

// Whether PATH (resolved with realpath when it exists) is a mount point in
// this mount namespace.
bool is_mount_point(const std::string& path);

}  // namespace strata::fs
