// fastcae-run: runs an exported fastcae student (an AOTInductor package, .pt2) on images from a .npy file.
//
//   fastcae-run PACKAGE.pt2 IMAGES.npy [--bench] [--device cpu|cuda] [--logits OUT.npy]
//
// The package's one input is float32 images [N, C, H, W] in [0, 1] (normalisation is folded in), N dynamic
// in 1..1024; its one output is float32 logits [N, K]. Its metadata names the image shape
// (fastcae.image_shape = "C,H,W"), the class count (fastcae.num_classes = "K") and the student
// (fastcae.model); AOTInductor adds the device it was built for (AOTI_DEVICE_KEY). See native/README.md.
//
// Prints "INDEX CLASS" per image (top-1), optionally writes the logits to a float32 .npy, optionally times
// batches of 1, 8 and 64. Bad input ends with one line on stderr and a non-zero exit status (1: the files or
// the machine, 2: the command line), never an uncaught exception.
//
// One translation unit, no CUDA headers: the same source builds against CPU and CUDA builds of libtorch.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

static_assert(std::endian::native == std::endian::little, "fastcae-run reads and writes little-endian .npy files");

namespace {

namespace fs = std::filesystem;
using Metadata = std::unordered_map<std::string, std::string>;
using Loader = torch::inductor::AOTIModelPackageLoader;

constexpr const char* kProgram = "fastcae-run";
constexpr const char* kModelName = "model";  // AOTInductor's default model name inside a package
constexpr int64_t kMaxBatch = 1024;          // the exported batch dimension's upper bound
constexpr int kBenchWarmup = 3;
constexpr int kBenchRuns = 20;
constexpr int64_t kBenchBatches[] = {1, 8, 64};

constexpr const char* kUsage =
    "usage: fastcae-run PACKAGE.pt2 IMAGES.npy [--bench] [--device cpu|cuda] [--logits OUT.npy]\n"
    "  PACKAGE.pt2      a student exported by `fastcae export` (AOTInductor package)\n"
    "  IMAGES.npy       images [N, C, H, W] or one image [C, H, W]; float32 in [0, 1] ('<f4')\n"
    "                   or uint8 ('|u1', divided by 255); C order\n"
    "  --logits OUT.npy also write the logits [N, K] as a float32 .npy\n"
    "  --bench          time batches of 1, 8 and 64 images (median of 20 runs after a warm-up)\n"
    "  --device D       cpu or cuda; must be the device the package was built for (the default)\n"
    "Prints one line per image: INDEX TOP1_CLASS.\n";

// A problem with the command line (exit status 2) or with the files / the machine (exit status 1).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& message) {
  throw RunError(message);
}

// The first line of a message, trimmed: torch's errors can span many lines (file lists, backtraces).
std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) {
    line.pop_back();
  }
  return line.empty() ? std::string("unknown error") : line;
}

std::string join(const std::vector<int64_t>& values, const char* separator) {
  std::ostringstream out;
  for (size_t i = 0; i < values.size(); ++i) {
    out << (i ? separator : "") << values[i];
  }
  return out.str();
}

// ---------------------------------------------------------------------------------------------------------
// Command line

struct Args {
  std::string package;
  std::string images;
  std::string logits;  // empty: not written
  std::string device;  // empty: the package's device
  bool bench = false;
};

Args parse_args(int argc, char** argv) {
  Args args;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value_of = [&](const std::string& flag) -> std::string {
      if (arg.size() > flag.size() && arg.compare(0, flag.size() + 1, flag + "=") == 0) {
        return arg.substr(flag.size() + 1);
      }
      if (i + 1 >= argc) {
        throw UsageError(flag + " needs a value");
      }
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--bench") {
      args.bench = true;
    } else if (arg == "--device" || arg.rfind("--device=", 0) == 0) {
      args.device = value_of("--device");
      if (args.device != "cpu" && args.device != "cuda") {
        throw UsageError("--device must be cpu or cuda, not '" + args.device + "'");
      }
    } else if (arg == "--logits" || arg.rfind("--logits=", 0) == 0) {
      args.logits = value_of("--logits");
      if (args.logits.empty()) {
        throw UsageError("--logits needs a file name");
      }
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError("unknown option " + arg + " (see --help)");
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) {
    throw UsageError("expected PACKAGE.pt2 and IMAGES.npy, got " + std::to_string(positional.size()) +
                     " file argument(s) (see --help)");
  }
  args.package = positional[0];
  args.images = positional[1];
  return args;
}

// Checks that a path names a readable regular file; `what` is "package" or "images file".
void require_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    fail(what + " not found: " + path);
  }
  if (fs::is_directory(status)) {
    fail(what + " " + path + " is a directory, not a file");
  }
  std::ifstream probe(path, std::ios::binary);
  if (!probe) {
    fail("cannot open " + what + " " + path + ": " + std::strerror(errno));
  }
}

// ---------------------------------------------------------------------------------------------------------
// NPY: format versions 1.0, 2.0 and 3.0; '<f4' (float32) or '|u1' (uint8); C order.
// The header is a Python dict literal, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 16, 16), }

struct Npy {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  std::vector<char> data;
};

// A parser of the few Python literals an .npy header uses: dict, str, bool, int, tuple of ints.
class HeaderParser {
 public:
  HeaderParser(std::string text, std::string path) : text_(std::move(text)), path_(std::move(path)) {}

  void parse(Npy& npy) {
    std::set<std::string> seen;
    expect('{');
    while (!peek('}')) {
      std::string key = parse_string();
      expect(':');
      if (key == "descr") {
        npy.descr = parse_string();
      } else if (key == "fortran_order") {
        npy.fortran_order = parse_bool();
      } else if (key == "shape") {
        npy.shape = parse_shape();
      } else {
        bad("unexpected key '" + key + "'");
      }
      seen.insert(key);
      if (!peek('}')) {
        expect(',');
      }
    }
    expect('}');
    for (const char* key : {"descr", "fortran_order", "shape"}) {
      if (!seen.count(key)) {
        bad(std::string("no '") + key + "' key");
      }
    }
  }

 private:
  [[noreturn]] void bad(const std::string& why) const {
    fail(path_ + " has a malformed .npy header (" + why + ")");
  }
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
  }
  bool peek(char c) {
    skip_space();
    return pos_ < text_.size() && text_[pos_] == c;
  }
  void expect(char c) {
    if (!peek(c)) {
      bad(std::string("expected '") + c + "'");
    }
    ++pos_;
  }
  std::string parse_string() {
    skip_space();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      bad("expected a string");
    }
    char quote = text_[pos_++];
    size_t end = text_.find(quote, pos_);
    if (end == std::string::npos) {
      bad("unterminated string");
    }
    std::string value = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return value;
  }
  bool parse_bool() {
    skip_space();
    if (text_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (text_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    bad("expected True or False");
  }
  int64_t parse_int() {
    skip_space();
    size_t start = pos_;
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
    if (pos_ == start || pos_ - start > 15) {
      bad("expected a dimension");
    }
    return std::stoll(text_.substr(start, pos_ - start));
  }
  std::vector<int64_t> parse_shape() {
    std::vector<int64_t> shape;
    expect('(');
    while (!peek(')')) {
      shape.push_back(parse_int());
      if (!peek(')')) {
        expect(',');
      }
    }
    expect(')');
    return shape;
  }

  std::string text_;
  std::string path_;
  size_t pos_ = 0;
};

Npy read_npy(const std::string& path) {
  require_file(path, "images file");
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, sizeof magic);
  if (in.gcount() != 8 || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    fail(path + " is not a .npy file (no \\x93NUMPY magic); save the images with numpy.save");
  }
  int major = static_cast<unsigned char>(magic[6]);
  int minor = static_cast<unsigned char>(magic[7]);
  if (major < 1 || major > 3 || minor != 0) {
    fail(path + " has .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
         "; versions 1.0, 2.0 and 3.0 are supported");
  }
  unsigned char len_bytes[4] = {};
  int len_size = major == 1 ? 2 : 4;
  in.read(reinterpret_cast<char*>(len_bytes), len_size);
  if (in.gcount() != len_size) {
    fail(path + " is truncated (no .npy header length)");
  }
  uint64_t header_len = len_bytes[0] | (len_bytes[1] << 8);
  if (len_size == 4) {
    header_len |= (uint64_t{len_bytes[2]} << 16) | (uint64_t{len_bytes[3]} << 24);
  }
  if (header_len > (uint64_t{1} << 20)) {
    fail(path + " has an implausible .npy header length (" + std::to_string(header_len) + " bytes)");
  }
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (static_cast<uint64_t>(in.gcount()) != header_len) {
    fail(path + " is truncated (the .npy header is cut short)");
  }

  Npy npy;
  HeaderParser(header, path).parse(npy);

  int64_t itemsize = 0;
  if (npy.descr == "<f4") {
    itemsize = 4;
  } else if (npy.descr == "|u1" || npy.descr == "<u1" || npy.descr == ">u1" || npy.descr == "u1") {
    npy.descr = "|u1";
    itemsize = 1;
  } else {
    std::string hint = npy.descr == ">f4" ? " (big-endian)" : "";
    fail(path + " has dtype '" + npy.descr + "'" + hint +
         "; accepted dtypes are float32 '<f4' (values in [0, 1]) and uint8 '|u1' (divided by 255)");
  }
  if (npy.fortran_order) {
    bool trivial = std::count_if(npy.shape.begin(), npy.shape.end(), [](int64_t d) { return d > 1; }) <= 1;
    if (!trivial) {
      fail(path + " is in Fortran order; save a C-order array (numpy.ascontiguousarray)");
    }
  }
  int64_t count = 1;
  for (int64_t d : npy.shape) {
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / itemsize / d) {
      fail(path + " has an implausible shape (" + join(npy.shape, ", ") + ")");
    }
    count *= d;
  }
  const int64_t nbytes = count * itemsize;
  std::error_code ec;
  const auto file_size = static_cast<int64_t>(fs::file_size(path, ec));
  const int64_t offset = 8 + len_size + static_cast<int64_t>(header_len);
  if (ec || file_size - offset < nbytes) {
    fail(path + " is truncated: shape (" + join(npy.shape, ", ") + ") needs " + std::to_string(nbytes) +
         " bytes of data, the file has " + std::to_string(std::max<int64_t>(0, file_size - offset)));
  }
  npy.data.resize(static_cast<size_t>(nbytes));
  in.read(npy.data.data(), static_cast<std::streamsize>(nbytes));
  if (in.gcount() != nbytes) {
    fail("cannot read " + path + ": " + std::strerror(errno));
  }
  return npy;
}

void write_npy_float32(const std::string& path, const at::Tensor& tensor) {
  at::Tensor t = tensor.to(at::kCPU, at::kFloat).contiguous();
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  std::string dims = join(shape, ", ");
  if (shape.size() == 1) {
    dims += ",";
  }
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // numpy pads the header with spaces so that the data starts on a 64-byte boundary; it ends with '\n'.
  const size_t preamble = 10;  // magic (6) + version (2) + header length (2)
  size_t total = preamble + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  if (header.size() > 65535) {
    fail("cannot write " + path + ": shape too large for an .npy 1.0 header");
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    fail("cannot write logits to " + path + ": " + std::strerror(errno));
  }
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char preamble_bytes[10] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                   static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(preamble_bytes, sizeof preamble_bytes);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(t.const_data_ptr()), static_cast<std::streamsize>(t.numel() * 4));
  out.close();
  if (!out) {
    fail("cannot write logits to " + path + ": " + std::strerror(errno));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Package

// Parses a metadata integer list like "1,16,16".
std::vector<int64_t> parse_ints(const std::string& text, const std::string& key, const std::string& package) {
  std::vector<int64_t> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      long long v = std::stoll(item, &used);
      while (used < item.size() && std::isspace(static_cast<unsigned char>(item[used]))) {
        ++used;
      }
      if (used != item.size() || v <= 0) {
        throw std::invalid_argument(item);
      }
      values.push_back(v);
    } catch (const std::exception&) {
      fail("package " + package + " has a malformed " + key + " metadata value '" + text + "'");
    }
  }
  return values;
}

const std::string& require_key(const Metadata& metadata, const std::string& key, const std::string& package) {
  auto it = metadata.find(key);
  if (it == metadata.end() || it->second.empty()) {
    fail("package " + package + " has no " + key + " metadata; was it made by `fastcae export`?");
  }
  return it->second;
}

// The package's metadata without loading its model, where this libtorch can (load_metadata_from_package
// arrived after torch 2.5): the device it was built for is checked before the model is loaded onto it.
template <class L = Loader>
std::optional<Metadata> peek_metadata(const std::string& package) {
  if constexpr (requires(const std::string& p) { L::load_metadata_from_package(p, p); }) {
    return L::load_metadata_from_package(package, kModelName);
  } else {
    return std::nullopt;
  }
}

// The CPU features the package's kernels were compiled for (AOTI_CPU_ISA, e.g. "AVX512 AVX512_VNNI
// AMX_TILE"), which this CPU lacks: running them would die of SIGILL. Linux x86 only; empty elsewhere.
std::vector<std::string> missing_cpu_features(const std::string& isa) {
  std::vector<std::string> missing;
#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::string word;
      while (words >> word) {
        flags.insert(word);
      }
      break;
    }
  }
  if (flags.empty()) {
    return missing;  // cannot tell
  }
  const std::unordered_map<std::string, std::vector<std::string>> needs = {
      {"AVX2", {"avx2", "fma"}},
      {"AVX512", {"avx512f", "avx512dq", "avx512vl", "avx512bw", "fma"}},
      {"AVX512_VNNI", {"avx512_vnni"}},
      {"AMX_TILE", {"amx_tile"}},
  };
  std::istringstream tokens(isa);
  std::string token;
  while (tokens >> token) {
    std::transform(token.begin(), token.end(), token.begin(), [](unsigned char c) { return std::toupper(c); });
    auto it = needs.find(token);
    if (it == needs.end()) {
      continue;
    }
    for (const auto& flag : it->second) {
      if (!flags.count(flag)) {
        missing.push_back(token);
        break;
      }
    }
  }
#else
  (void)isa;
#endif
  return missing;
}

// Decides the device to run on, or fails with the reason.
std::string choose_device(const Metadata& metadata, const std::string& requested, const std::string& package) {
  auto it = metadata.find("AOTI_DEVICE_KEY");
  if (it == metadata.end() || it->second.empty()) {
    fail("package " + package + " is not an AOTInductor package (no AOTI_DEVICE_KEY metadata)");
  }
  const std::string built_for = it->second;
  const bool cuda = torch::cuda::is_available();
  if (requested == "cuda" && !cuda) {
    fail("--device cuda: this machine has no CUDA device (or this libtorch has no CUDA support)");
  }
  if (built_for != "cpu" && built_for != "cuda") {
    fail("package " + package + " was built for " + built_for + "; fastcae-run runs cpu and cuda packages");
  }
  if (built_for == "cuda" && !cuda) {
    fail("package " + package + " was built for cuda, this machine has no CUDA device; export it for cpu");
  }
  if (!requested.empty() && requested != built_for) {
    fail("package " + package + " was built for " + built_for + " and cannot run on " + requested +
         "; export it again for " + requested);
  }
  if (built_for == "cpu") {
    auto isa = metadata.find("AOTI_CPU_ISA");
    if (isa != metadata.end()) {
      auto missing = missing_cpu_features(isa->second);
      if (!missing.empty()) {
        std::string names;
        for (const auto& m : missing) {
          names += (names.empty() ? "" : ", ") + m;
        }
        fail("package " + package + " was compiled for CPUs with " + names +
             ", which this CPU lacks; export it on a machine like this one");
      }
    }
  }
  return built_for;
}

// ---------------------------------------------------------------------------------------------------------
// Running

struct Model {
  Loader* loader;
  at::Device device;
  int64_t num_classes;
  std::string package;

  // Logits [n, K] on the CPU for images [n, C, H, W] (any n; run in chunks the exported batch range allows).
  at::Tensor logits(const at::Tensor& images) {
    std::vector<at::Tensor> chunks;
    for (int64_t start = 0; start < images.size(0); start += kMaxBatch) {
      int64_t n = std::min(kMaxBatch, images.size(0) - start);
      at::Tensor out = forward(images.narrow(0, start, n).to(device).contiguous());
      chunks.push_back(out.to(at::kCPU, at::kFloat).contiguous());
    }
    return chunks.size() == 1 ? chunks[0] : at::cat(chunks, 0);
  }

  // One call of the exported program; `batch` is on `device`, n <= kMaxBatch.
  at::Tensor forward(const at::Tensor& batch) {
    std::vector<at::Tensor> inputs{batch};
    std::vector<at::Tensor> outputs = loader->run(inputs);
    if (outputs.size() != 1) {
      fail("package " + package + " returned " + std::to_string(outputs.size()) +
           " outputs; a fastcae student returns one (the logits)");
    }
    const at::Tensor& out = outputs[0];
    if (out.dim() != 2 || out.size(0) != batch.size(0) || out.size(1) != num_classes) {
      std::vector<int64_t> got(out.sizes().begin(), out.sizes().end());
      fail("package " + package + " returned logits of shape [" + join(got, ", ") + "], expected [" +
           std::to_string(batch.size(0)) + ", " + std::to_string(num_classes) + "]");
    }
    return out;
  }

  void synchronize() const {
    if (device.is_cuda()) {
      torch::cuda::synchronize();
    }
  }
};

// Images [N, C, H, W] float32 on the CPU, from the .npy array; checks its shape against the package's.
at::Tensor to_images(Npy& npy, const std::vector<int64_t>& chw, const std::string& path) {
  const std::string expected = "[N, " + join(chw, ", ") + "] or [" + join(chw, ", ") + "]";
  std::vector<int64_t> shape = npy.shape;
  if (shape.size() == 3) {
    shape.insert(shape.begin(), 1);
  }
  if (shape.size() != 4 || !std::equal(chw.begin(), chw.end(), shape.begin() + 1)) {
    fail(path + " has shape (" + join(npy.shape, ", ") + "); the package expects images " + expected +
         " (fastcae.image_shape " + join(chw, ",") + ")");
  }
  if (shape[0] == 0) {
    fail(path + " holds no images (shape (" + join(npy.shape, ", ") + "))");
  }
  at::Tensor images = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  if (npy.descr == "<f4") {
    std::memcpy(images.mutable_data_ptr(), npy.data.data(), npy.data.size());
  } else {
    at::Tensor bytes = at::from_blob(npy.data.data(), shape, at::TensorOptions().dtype(at::kByte));
    images.copy_(bytes).div_(255.0);
  }
  npy.data = {};
  return images;
}

void warn_if_out_of_range(const at::Tensor& images, const std::string& path) {
  const float lo = images.min().item<float>();
  const float hi = images.max().item<float>();
  if (std::isnan(lo) || std::isnan(hi) || lo < -1e-3f || hi > 1.0f + 1e-3f) {
    std::fprintf(stderr,
                 "%s: warning: pixel values of %s span [%g, %g]; the student expects [0, 1] "
                 "(save uint8 images as uint8 to have them divided by 255)\n",
                 kProgram, path.c_str(), lo, hi);
  }
}

void bench(Model& model, const at::Tensor& images, const std::string& model_name) {
  std::printf("# bench: %s on %s (%d CPU threads), median of %d runs after %d warm-up runs\n",
              model_name.c_str(), model.device.str().c_str(), at::get_num_threads(), kBenchRuns, kBenchWarmup);
  for (int64_t batch_size : kBenchBatches) {
    // Repeats the images as often as needed to fill the batch.
    at::Tensor index = at::arange(batch_size, at::TensorOptions().dtype(at::kLong)).remainder(images.size(0));
    at::Tensor batch = images.index_select(0, index).to(model.device).contiguous();
    for (int i = 0; i < kBenchWarmup; ++i) {
      model.forward(batch);
    }
    model.synchronize();
    std::vector<double> seconds;
    for (int i = 0; i < kBenchRuns; ++i) {
      auto start = std::chrono::steady_clock::now();
      model.forward(batch);
      model.synchronize();
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(seconds.begin(), seconds.end());
    double median = (seconds[(kBenchRuns - 1) / 2] + seconds[kBenchRuns / 2]) / 2;
    std::printf("# batch %3lld: %9.3f ms/batch  %12.1f images/s\n", static_cast<long long>(batch_size),
                median * 1e3, static_cast<double>(batch_size) / median);
  }
}

int run(const Args& args) {
  // Package: check it is a zip archive before torch tries to unpack it.
  require_file(args.package, "package");
  {
    std::ifstream in(args.package, std::ios::binary);
    char magic[4] = {};
    in.read(magic, 4);
    if (in.gcount() != 4 || std::memcmp(magic, "PK\x03\x04", 4) != 0) {
      fail(args.package + " is not a .pt2 package (not a zip archive); make one with `fastcae export`");
    }
  }
  // Images first: a bad .npy should not cost a model load.
  Npy npy = read_npy(args.images);
  if (!args.logits.empty()) {
    std::error_code ec;
    fs::path parent = fs::absolute(fs::path(args.logits), ec).parent_path();
    if (ec || !fs::is_directory(parent, ec)) {
      fail("cannot write logits to " + args.logits + ": no directory " + parent.string());
    }
  }

  std::optional<Metadata> early;
  try {
    early = peek_metadata(args.package);
  } catch (const c10::Error& e) {
    fail("cannot read package " + args.package + " (not an AOTInductor package?): " +
         first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    fail("cannot read package " + args.package + " (not an AOTInductor package?): " + first_line(e.what()));
  }
  std::string device;
  if (early) {
    device = choose_device(*early, args.device, args.package);
  } else if (args.device == "cuda" && !torch::cuda::is_available()) {
    fail("--device cuda: this machine has no CUDA device (or this libtorch has no CUDA support)");
  }

  std::unique_ptr<Loader> loader;
  try {
    loader = std::make_unique<Loader>(args.package, kModelName);
  } catch (const c10::Error& e) {
    fail("cannot load package " + args.package + ": " + first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    fail("cannot load package " + args.package + ": " + first_line(e.what()));
  }
  const Metadata metadata = loader->get_metadata();
  if (!early) {
    device = choose_device(metadata, args.device, args.package);
  }
  const std::vector<int64_t> chw = parse_ints(require_key(metadata, "fastcae.image_shape", args.package),
                                              "fastcae.image_shape", args.package);
  if (chw.size() != 3) {
    fail("package " + args.package + " has fastcae.image_shape '" + join(chw, ",") + "'; expected C,H,W");
  }
  const std::vector<int64_t> classes = parse_ints(require_key(metadata, "fastcae.num_classes", args.package),
                                                  "fastcae.num_classes", args.package);
  if (classes.size() != 1) {
    fail("package " + args.package + " has a malformed fastcae.num_classes metadata value");
  }
  auto name_it = metadata.find("fastcae.model");
  const std::string model_name = name_it != metadata.end() ? name_it->second : std::string("student");

  at::Tensor images = to_images(npy, chw, args.images);
  warn_if_out_of_range(images, args.images);

  Model model{loader.get(), at::Device(device), classes[0], args.package};
  at::Tensor logits = model.logits(images);
  at::Tensor top1 = logits.argmax(1).contiguous();

  std::string lines;
  const int64_t* cls = top1.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < top1.size(0); ++i) {
    lines += std::to_string(i) + ' ' + std::to_string(cls[i]) + '\n';
  }
  std::fwrite(lines.data(), 1, lines.size(), stdout);

  if (!args.logits.empty()) {
    write_npy_float32(args.logits, logits);
  }
  if (args.bench) {
    bench(model, images, model_name);
  }
  std::fflush(stdout);
  return 0;
}

void report(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s: error: %s\n", kProgram, first_line(message).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    report(e.what());
    return 2;
  } catch (const RunError& e) {
    report(e.what());
    return 1;
  } catch (const c10::Error& e) {
    report(e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    report(e.what());
    return 1;
  } catch (...) {
    report("unknown error");
    return 1;
  }
}
