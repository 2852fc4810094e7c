// One LSTM layer over a whole sequence, forward and backward, on the CPU: the plain cell (nn.LSTM's) and the
// layer-normalised one (lstm_ae.cells.LayerNormLSTMLayer), with the input projection done by the caller.
//
//   a = xp_t + r           (plain)      a = xp_t + gamma_r * LN(r) + beta_r   (layernorm),   r = W h_{t-1}
//   i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
//   c_t = f c_{t-1} + i g
//   h_t = o tanh(c_t)      (plain)      h_t = o tanh(gamma_c * LN(c_t) + beta_c)  (layernorm)
//
// Per step: one matrix product (two backward), then one pass over each batch row for everything else, in loops
// the compiler vectorises (exp and tanh from glibc's vector maths library, chosen for the CPU at run time).
// Python's cell runs about 15 PyTorch operations per step forward and 30 backward, each dispatched on its own.
// Every tensor here is time-major, (T, B, X): each step's rows lie together in memory (batch-first rows of one step
// lie T x X apart, and reading them cost more than the arithmetic on them).

#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FOR_EVERY_CPU __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FOR_EVERY_CPU
#endif

#define INLINE inline __attribute__((always_inline))  // into each CPU's clone of the callers, at its width

// exp of minus |x| only: 1 / (1 + exp(-x)) is NaN under -ffast-math where exp overflows (x < -88.7 in float), and
// a saturated gate is a healthy one.
template <typename T>
INLINE T sigmoid(T x) {
  const T e = std::exp(-std::abs(x));
  const T s = T(1) / (T(1) + e);
  return x >= T(0) ? s : e * s;
}

// (mean, 1 / sqrt(variance + eps)) of n values, as nn.LayerNorm computes them (biased variance).
template <typename T>
INLINE std::pair<T, T> moments(const T* x, int64_t n, T eps) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = 0; k < n; ++k) sum += x[k];
  const T mean = sum / T(n);
  T squares = 0;
#pragma omp simd reduction(+ : squares)
  for (int64_t k = 0; k < n; ++k) squares += (x[k] - mean) * (x[k] - mean);
  return {mean, T(1) / std::sqrt(squares / T(n) + eps)};
}

// The backward of y = gamma * n + beta, n = LN(x), for one row: dx from dy (dx may be dy), and the row's share of
// gamma's and beta's gradients added to d_gamma and d_beta. `dn`: `size` values of scratch.
template <typename T>
INLINE void layer_norm_backward(const T* dy, const T* n, const T* gamma, T rstd, int64_t size, T* d_gamma, T* d_beta,
                                T* dn, T* dx) {
  T sum = 0, dot = 0;
#pragma omp simd reduction(+ : sum, dot)
  for (int64_t k = 0; k < size; ++k) {
    d_gamma[k] += dy[k] * n[k];
    d_beta[k] += dy[k];
    dn[k] = dy[k] * gamma[k];
    sum += dn[k];
    dot += dn[k] * n[k];
  }
  const T mean = sum / T(size), mean_dot = dot / T(size);
#pragma omp simd
  for (int64_t k = 0; k < size; ++k) dx[k] = rstd * (dn[k] - mean - n[k] * mean_dot);
}

// Where one batch row of one step reads and writes (null pointers for what the plain cell lacks).
template <typename T>
struct Row {
  const T* xp;      // 4H: the input projection ...
  const T* xp2;     // 4H: ... plus this, where it comes in two parts (a sequence's and a step's), else null
  const T* r;       // 4H: W h_{t-1}
  const T* c_prev;  // H
  T* act;           // 4H: the gates after their nonlinearity
  T* rn;            // 4H: LN(r)
  T* rstd_r;        // 1
  T* c;             // H
  T* cn;            // H: LN(c)
  T* rstd_c;        // 1
  T* th;            // H: tanh of the (normalised) cell
  T* h;             // H
};

template <typename T>
struct Norms {  // the layer norms' parameters, null for the plain cell
  const T* gamma_r;
  const T* beta_r;
  const T* gamma_c;
  const T* beta_c;
};

template <typename T>
FOR_EVERY_CPU void forward_row(int64_t H, T eps, Norms<T> norms, Row<T> row) {
  const int64_t G = 4 * H;
  T* act = row.act;
  if (row.xp2) {
#pragma omp simd
    for (int64_t k = 0; k < G; ++k) act[k] = row.xp[k] + row.xp2[k];
  } else {
#pragma omp simd
    for (int64_t k = 0; k < G; ++k) act[k] = row.xp[k];
  }
  if (norms.gamma_r) {
    const auto [mean, rstd] = moments(row.r, G, eps);
    *row.rstd_r = rstd;
#pragma omp simd
    for (int64_t k = 0; k < G; ++k) {
      row.rn[k] = (row.r[k] - mean) * rstd;
      act[k] += norms.gamma_r[k] * row.rn[k] + norms.beta_r[k];
    }
  } else {
#pragma omp simd
    for (int64_t k = 0; k < G; ++k) act[k] += row.r[k];
  }
#pragma omp simd
  for (int64_t k = 0; k < 2 * H; ++k) act[k] = sigmoid(act[k]);
#pragma omp simd
  for (int64_t k = 2 * H; k < 3 * H; ++k) act[k] = std::tanh(act[k]);
#pragma omp simd
  for (int64_t k = 3 * H; k < G; ++k) act[k] = sigmoid(act[k]);
  const T *i = act, *f = act + H, *g = act + 2 * H, *o = act + 3 * H;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) row.c[j] = f[j] * row.c_prev[j] + i[j] * g[j];
  if (norms.gamma_c) {
    const auto [mean, rstd] = moments(row.c, H, eps);
    *row.rstd_c = rstd;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      row.cn[j] = (row.c[j] - mean) * rstd;
      row.th[j] = std::tanh(norms.gamma_c[j] * row.cn[j] + norms.beta_c[j]);
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) row.th[j] = std::tanh(row.c[j]);
  }
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) row.h[j] = o[j] * row.th[j];
}

// One batch row of one step backward. dh: the gradient of this step's h from the outputs, dh_next: through the
// next step's recurrence; dc_next: the next step's cell gradient, overwritten with this step's. Out: da (the
// gates before their nonlinearity, which is the input projection's gradient), dr (of W h_{t-1}; da itself for the
// plain cell). `sums` (2 x 4H + 2 x H) accumulates the layer norms' parameter gradients: gamma_r, beta_r, gamma_c,
// beta_c. `scratch`: 4H values.
template <typename T>
FOR_EVERY_CPU void backward_row(int64_t H, Norms<T> norms, Row<T> row, const T* dh_out, const T* dh_next,
                                T* dc_next, T* da, T* dr, T* sums, T* scratch) {
  const int64_t G = 4 * H;
  const T *act = row.act, *th = row.th;
  const T *i = act, *f = act + H, *g = act + 2 * H, *o = act + 3 * H;
  T* dc = scratch;  // H values
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T dh = dh_out[j] + dh_next[j];
    da[3 * H + j] = dh * th[j] * o[j] * (T(1) - o[j]);
    dc[j] = dh * o[j] * (T(1) - th[j] * th[j]);  // of tanh's argument
  }
  if (norms.gamma_c)
    layer_norm_backward(dc, row.cn, norms.gamma_c, *row.rstd_c, H, sums + 2 * G, sums + 2 * G + H, scratch + H, dc);
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T dcj = dc[j] + dc_next[j];
    da[j] = dcj * g[j] * i[j] * (T(1) - i[j]);
    da[H + j] = dcj * row.c_prev[j] * f[j] * (T(1) - f[j]);
    da[2 * H + j] = dcj * i[j] * (T(1) - g[j] * g[j]);
    dc_next[j] = dcj * f[j];
  }
  if (norms.gamma_r)  // (the scratch's dc is spent)
    layer_norm_backward(da, row.rn, norms.gamma_r, *row.rstd_r, G, sums, sums + G, scratch, dr);
}

// A (S, B, X) tensor's rows, X contiguous, any strides over S and B (0 for an expanded one); null where empty.
template <typename T>
struct Rows {
  T* data = nullptr;
  int64_t step_stride = 0, batch_stride = 0;

  Rows() = default;
  explicit Rows(const torch::Tensor& t) {
    if (!t.defined() || t.numel() == 0) return;
    TORCH_CHECK(t.dim() == 3 && (t.size(2) == 1 || t.stride(2) == 1), "(S, B, X) with X contiguous");
    data = t.data_ptr<T>();
    step_stride = t.stride(0);
    batch_stride = t.stride(1);
  }
  T* at(int64_t s, int64_t b) const { return data ? data + s * step_stride + b * batch_stride : nullptr; }
};

template <typename T>
Norms<T> norms_of(const std::vector<torch::Tensor>& norms) {
  auto pointer = [](const torch::Tensor& t) -> const T* { return t.numel() ? t.data_ptr<T>() : nullptr; };
  return {pointer(norms[0]), pointer(norms[1]), pointer(norms[2]), pointer(norms[3])};
}

torch::Tensor one_per_row(const torch::Tensor& t) {  // (S, B) -> (S, B, 1)
  return t.numel() ? t.unsqueeze(-1) : t;
}

// Each step's rows in the layer's tensors. `keep`: every step's values are kept for backward; without, one slot
// serves every step (two for the cell: this step's and the last one's).
template <typename T>
struct Layer {
  Rows<T> xp, xp2, h0, c0, h, c, act, th, rn, rstd_r, cn, rstd_c;
  bool keep;

  Layer(const torch::Tensor& xp_, const torch::Tensor& xp2_, const torch::Tensor& h0_, const torch::Tensor& c0_,
        const torch::Tensor& h_, const std::vector<torch::Tensor>& kept, bool keep_)
      : xp(xp_), xp2(xp2_), h0(h0_.unsqueeze(0)), c0(c0_.unsqueeze(0)), h(h_), c(kept[0]), act(kept[1]),
        th(kept[2]), rn(kept[3]), rstd_r(one_per_row(kept[4])), cn(kept[5]), rstd_c(one_per_row(kept[6])), keep(keep_) {}

  Row<T> row(int64_t t, int64_t b, const T* r) const {
    const int64_t s = keep ? t : 0;
    return {xp.at(t, b), xp2.at(t, b), r,
            t ? c.at(keep ? t - 1 : (t - 1) % 2, b) : c0.at(0, b),
            act.at(s, b), rn.at(s, b), rstd_r.at(s, b), c.at(keep ? t : t % 2, b), cn.at(s, b), rstd_c.at(s, b),
            th.at(s, b), h.at(t, b)};
  }
};

void check_sizes(int64_t B, int64_t H, const torch::Tensor& h0, const torch::Tensor& c0,
                 const std::vector<torch::Tensor>& norms) {
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H && c0.sizes() == h0.sizes(),
              "h0 and c0 must be (B, H) = (", B, ", ", H, ")");
  TORCH_CHECK(norms.size() == 4, "four layer-norm parameters, or four empty tensors");
  if (norms[0].numel() == 0) return;
  for (int k = 0; k < 4; ++k)
    TORCH_CHECK(norms[k].is_contiguous() && norms[k].numel() == (k < 2 ? 4 * H : H), "layer-norm sizes 4H, 4H, H, H");
}

}  // namespace

// Fills h (T, B, H) and what backward needs, `kept`: c (T, B, H), act (T, B, 4H), th (T, B, H), and for the
// layer-normalised cell rn (T, B, 4H), rstd_r (T, B), cn (T, B, H), rstd_c (T, B) (empty tensors for the plain
// cell); with `keep` false, the same with T = 1 (2 for c): what inference needs. The input projection is xp
// (T, B, 4H), plus xp2 unless it is empty; any strides but the last (z's projection expanded over the steps, say).
// norms: gamma_r, beta_r, gamma_c, beta_c, or four empty tensors.
void forward(const torch::Tensor& xp, const torch::Tensor& xp2, const torch::Tensor& h0, const torch::Tensor& c0,
             const torch::Tensor& weight, const std::vector<torch::Tensor>& norms, double eps, bool keep,
             const torch::Tensor& h, const std::vector<torch::Tensor>& kept) {
  TORCH_CHECK(xp.device().is_cpu() && xp.dim() == 3 && xp.stride(2) == 1, "xp: a (T, B, 4H) CPU tensor");
  TORCH_CHECK(xp2.numel() == 0 || (xp2.sizes() == xp.sizes() && xp2.stride(2) == 1), "xp2: xp's shape");
  TORCH_CHECK(h0.is_contiguous() && c0.is_contiguous() && h.is_contiguous(), "contiguous h0, c0 and h");
  const int64_t T = xp.size(0), B = xp.size(1), H = weight.size(1), G = 4 * H;
  TORCH_CHECK(T >= 1 && xp.size(2) == G && weight.size(0) == G, "xp (T, B, 4H) and weight (4H, H) disagree");
  check_sizes(B, H, h0, c0, norms);
  auto r = torch::empty({B, G}, xp.options());
  const auto w_t = weight.t();
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "fused_lstm_forward", [&] {
    const Layer<scalar_t> layer(xp, xp2, h0, c0, h, kept, keep);
    const auto n = norms_of<scalar_t>(norms);
    const auto e = static_cast<scalar_t>(eps);
    const scalar_t* r_data = r.data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      at::mm_out(r, t ? h[t - 1] : h0, w_t);
      at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) forward_row<scalar_t>(H, e, n, layer.row(t, b, r_data + b * G));
      });
    }
  });
}

// -> [dh0, dc0, dweight, then for the layer-normalised cell dgamma_r, dbeta_r, dgamma_c, dbeta_c]. Fills dxp
// (T, B, 4H) and dr (T, B, 4H; for the plain cell, dxp itself). dh: the gradient of every step's h (T, B, H), the
// last step's h_T included; dc_last: of c_T. The rest: forward's, kept.
std::vector<torch::Tensor> backward(const torch::Tensor& dh, const torch::Tensor& dc_last, const torch::Tensor& h0,
                                    const torch::Tensor& c0, const torch::Tensor& weight,
                                    const std::vector<torch::Tensor>& norms, const torch::Tensor& h,
                                    const std::vector<torch::Tensor>& kept, const torch::Tensor& dxp,
                                    const torch::Tensor& dr) {
  TORCH_CHECK(dh.is_contiguous() && dxp.is_contiguous() && dr.is_contiguous(), "contiguous dh, dxp and dr");
  const int64_t T = h.size(0), B = h.size(1), H = weight.size(1), G = 4 * H;
  TORCH_CHECK(dh.sizes() == h.sizes() && dc_last.sizes() == c0.sizes(), "dh (T, B, H) and dc_last (B, H)");
  check_sizes(B, H, h0, c0, norms);
  const bool norm = norms[0].numel() > 0;
  auto dh_next = torch::zeros({B, H}, h.options());
  auto dc_next = dc_last.contiguous().clone();
  const int64_t threads = at::get_num_threads();
  auto scratch = torch::empty({threads, G}, h.options());
  auto sums = torch::zeros({threads, 2 * G + 2 * H}, h.options());  // each thread's, added up at the end
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "fused_lstm_backward", [&] {
    const Layer<scalar_t> layer(torch::Tensor(), torch::Tensor(), h0, c0, h, kept, true);
    const auto n = norms_of<scalar_t>(norms);
    const Rows<scalar_t> dh_rows(dh), dxp_rows(dxp), dr_rows(dr);
    scalar_t *dh_next_data = dh_next.data_ptr<scalar_t>(), *dc_next_data = dc_next.data_ptr<scalar_t>();
    for (int64_t t = T - 1; t >= 0; --t) {
      at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
        const int64_t thread = at::get_thread_num();
        scalar_t* own_scratch = scratch.data_ptr<scalar_t>() + thread * G;
        scalar_t* own_sums = sums.data_ptr<scalar_t>() + thread * (2 * G + 2 * H);
        for (int64_t b = begin; b < end; ++b) {
          backward_row<scalar_t>(H, n, layer.row(t, b, nullptr), dh_rows.at(t, b), dh_next_data + b * H,
                                 dc_next_data + b * H, dxp_rows.at(t, b), dr_rows.at(t, b), own_sums, own_scratch);
        }
      });
      at::mm_out(dh_next, dr[t], weight);  // after the rows above have read it
    }
  });
  // The recurrent weight's gradient, the sum over steps of dr_t^T h_{t-1}: one product over all steps, not T.
  auto dweight = dr[0].t().mm(h0);
  if (T > 1) dweight.addmm_(dr.narrow(0, 1, T - 1).reshape({-1, G}).t(), h.narrow(0, 0, T - 1).reshape({-1, H}));
  std::vector<torch::Tensor> grads = {dh_next, dc_next, dweight};
  if (norm) {
    const auto total = sums.sum(0);
    for (auto [start, size] : {std::pair<int64_t, int64_t>{0, G}, {G, G}, {2 * G, H}, {2 * G + H, H}})
      grads.push_back(total.narrow(0, start, size).clone());  // each parameter its own gradient's storage
  }
  return grads;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // Without Python's lock while they run: other threads of the process (Ray's reporting, say) go on meanwhile.
  m.def("forward", &forward, "one LSTM layer over a sequence, forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "one LSTM layer over a sequence, backward", py::call_guard<py::gil_scoped_release>());
}
