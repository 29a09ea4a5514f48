// Crafted tar archives for the unit tests of everything that reads tars
// (layer extraction, ADD): entries are written as given, with no checks, so
// a test can make the hostile ones.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace strata::testing {

struct TarEntry {
  std::string name;
  char type = 'f';   // f file, d dir, l symlink, h hard link
  std::string data;  // content, or link target
  long long uid = 0, gid = 0;
};

// Writes DIR/NAME as a PAX tar of ENTRIES and returns its path.
inline std::string make_tar(const std::string& dir, const std::vector<TarEntry>& entries,
                            const std::string& name = "t.tar") {
  std::string path = dir + "/" + name;
  ::archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  REQUIRE(archive_write_open_filename(a, path.c_str()) == ARCHIVE_OK);
  for (const auto& e : entries) {
    ::archive_entry* en = archive_entry_new();
    archive_entry_set_pathname(en, e.name.c_str());
    archive_entry_set_perm(en, e.type == 'd' ? 0755 : 0644);
    archive_entry_set_uid(en, e.uid);
    archive_entry_set_gid(en, e.gid);
    if (e.type == 'f') {
      archive_entry_set_filetype(en, AE_IFREG);
      archive_entry_set_size(en, static_cast<la_int64_t>(e.data.size()));
    } else if (e.type == 'd') {
      archive_entry_set_filetype(en, AE_IFDIR);
    } else if (e.type == 'l') {
      archive_entry_set_filetype(en, AE_IFLNK);
      archive_entry_set_symlink(en, e.data.c_str());
    } else {
      archive_entry_set_filetype(en, AE_IFREG);
      archive_entry_set_hardlink(en, e.data.c_str());
    }
    archive_write_header(a, en);
    if (e.type == 'f') archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(en);
  }
  archive_write_close(a);
  archive_write_free(a);
  return path;
}

}  // namespace strata::testing
