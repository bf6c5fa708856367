#include "offload/formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

namespace strata {
namespace {

// The mapped ranges the SIGBUS handler knows. A signal handler can reach only globals, and only
// lock-free ones: this registry is the one piece of global mutable state here, written under a
// mutex by open()/~MappedFile and read (atomically, without locking) by the handler.
struct MappedRange {
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  char path[512] = {};
};
constexpr int kMaxRanges = 64;
MappedRange g_ranges[kMaxRanges];
std::mutex g_ranges_mutex;
struct sigaction g_previous_sigbus {};

void write_all(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (MappedRange& r : g_ranges) {
    const uintptr_t b = r.begin.load(std::memory_order_acquire);
    if (b != 0 && addr >= b && addr < r.end.load(std::memory_order_acquire)) {
      write_all("strata: ");
      write_all(r.path);
      write_all(
          " was truncated while mapped (a read past its new end); stopping. Do not "
          "rewrite a model file while strata runs on it.\n");
      ::_exit(kMappedFileTruncatedExitCode);
    }
  }
  // Not ours: what would have happened without this handler.
  if (g_previous_sigbus.sa_flags & SA_SIGINFO && g_previous_sigbus.sa_sigaction != nullptr) {
    g_previous_sigbus.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN &&
      g_previous_sigbus.sa_handler != nullptr) {
    g_previous_sigbus.sa_handler(sig);
    return;
  }
  ::signal(SIGBUS, SIG_DFL);
  ::raise(SIGBUS);
}

void register_range(const uint8_t* data, size_t size, const std::string& path) {
  std::lock_guard<std::mutex> lock(g_ranges_mutex);
  static bool installed = [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    return ::sigaction(SIGBUS, &sa, &g_previous_sigbus) == 0;
  }();
  (void)installed;
  for (MappedRange& r : g_ranges) {
    if (r.begin.load(std::memory_order_relaxed) != 0) continue;
    std::strncpy(r.path, path.c_str(), sizeof(r.path) - 1);
    r.path[sizeof(r.path) - 1] = '\0';
    r.end.store(reinterpret_cast<uintptr_t>(data) + size, std::memory_order_release);
    r.begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_release);
    return;
  }
  // More than kMaxRanges files mapped at once: a fault in this one gets the default action.
}

void unregister_range(const uint8_t* data) {
  std::lock_guard<std::mutex> lock(g_ranges_mutex);
  for (MappedRange& r : g_ranges) {
    if (r.begin.load(std::memory_order_relaxed) == reinterpret_cast<uintptr_t>(data)) {
      r.begin.store(0, std::memory_order_release);
      r.end.store(0, std::memory_order_release);
    }
  }
}

}  // namespace

StatusOr<std::shared_ptr<const MappedFile>> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::io_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::io_error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::io_error(path + ": not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return Status::io_error(path + ": mmap failed: " + std::strerror(err));
    }
    data = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
  if (data != nullptr) register_range(data, size, path);
  return std::shared_ptr<const MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ == nullptr) return;
  unregister_range(data_);
  ::munmap(const_cast<uint8_t*>(data_), size_bytes_);
}

StatusOr<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::io_error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::io_error(path + ": read failed");
  return ss.str();
}

}  // namespace strata
