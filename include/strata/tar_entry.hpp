// strata::archive::write_entry: one named entry of a directory as a tar (the
// layer writer's walk, for `strata cp` of a running container).
#pragma once

#include <string>

namespace strata::archive {

// Writes the entry NAME of the directory open at DIRFD (with the tree below
// it when it is a directory) as a plain tar to OUT_FD, under the name AS
// (its tree under AS/); an empty NAME writes the tree below DIRFD itself,
// as write_layer does (under AS/ when AS is not empty). Taken literally, as
// write_layer with changeset false; nothing is followed, and the contents
// of proc, sysfs and cgroup mounts below are left out. SHOWN names the
// directory in errors.
void write_entry(int dirfd, const std::string& name, const std::string& as, int out_fd, const std::string& shown);

}  // namespace strata::archive
