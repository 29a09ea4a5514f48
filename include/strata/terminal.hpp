// The terminal on fd 0 in raw mode, for as long as a RawTerminal lives:
// what `run -it`, `exec -it` and `attach` type reaches the container's
// terminal byte by byte (Ctrl-C included), and the terminal is restored
// however the scope ends.
#pragma once

#include <termios.h>
#include <unistd.h>

namespace strata {

class RawTerminal {
 public:
  // Does nothing when fd 0 is not a terminal.
  RawTerminal() {
    if (::isatty(0) == 0 || ::tcgetattr(0, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    if (::tcsetattr(0, TCSANOW, &raw) == 0) active_ = true;
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
  ~RawTerminal() {
    if (active_) ::tcsetattr(0, TCSANOW, &saved_);
  }
  // The settings to restore (what to restore from a thread that may outlive
  // this object); nothing when the terminal was left as it was.
  const termios* saved() const { return active_ ? &saved_ : nullptr; }

 private:
  termios saved_{};
  bool active_ = false;
};

}  // namespace strata
