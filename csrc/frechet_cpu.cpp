// Batched trace of the matrix square root of a product of two symmetric PSD matrices,
//   tr((C1 C2)^{1/2}) = sum_i sqrt(lambda_i(C1 C2)),
// in float64, without complex arithmetic. Method, per pair:
//   1. pivoted Cholesky C1 = P L L^T P^T (L is d x r, r = numerical rank; pivots stop when the largest
//      remaining diagonal of the Schur complement is <= d * eps * max diag(C1), so a singular C1,
//      e.g. a covariance of n < d samples, simply gives r < d);
//   2. M = L^T (P^T C2 P) L, an r x r symmetric PSD matrix with the same nonzero eigenvalues as
//      C1 C2 (C1 C2 = P L (L^T P^T C2 P L) L^{-1}... and AB ~ BA for the rank-deficient case);
//   3. eigenvalues of M by Householder tridiagonalisation + implicit QL (values only);
//   4. negative round-off eigenvalues are clamped to 0, the rest square-rooted and summed.
// Every step is a symmetric/triangular real algorithm, so the result is real and finite for any
// finite PSD input, and exact (up to rounding) for symmetric PSD matrices; the nonsymmetric
// eigenvalue route (eig(C1 C2)) can return complex pairs from round-off and costs ~3x the work.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace ddmini {
namespace {

DDMINI_ALWAYS_INLINE double ddot_impl(int64_t n, const double* x, const double* y) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}
DDMINI_MULTIVERSION(double, ddot, (int64_t n, const double* x, const double* y), (n, x, y))

// Register-blocked product tile: C[i][j] = (C[i][j] - if sub) sum_{k=kb}^{ke-1} A(i, k) B[k][j] for i < MR, j < NR, with
// A(i, k) = A[i * sai + k * sak] (so A may be read transposed) and B row-major with leading dimension
// ldb. The MR x NR accumulators stay in registers across the whole k loop, so each k costs one row
// segment of B and MR broadcasts instead of a load and a store of C per multiply-add.
constexpr int64_t kMR = 4, kNR = 8;

#if defined(__GNUC__) || defined(__clang__)
typedef double v4d __attribute__((vector_size(32)));
// Unaligned vector load / store (macros, so that no v4d crosses a call boundary of a non-AVX clone).
#define DDMINI_LOAD4(v, p) std::memcpy(&(v), (p), sizeof(v4d))
#define DDMINI_STORE4(p, v) std::memcpy((p), &(v), sizeof(v4d))

DDMINI_ALWAYS_INLINE void gemm_tile_impl(int64_t kb, int64_t ke, const double* A, int64_t sai, int64_t sak,
                                        const double* B, int64_t ldb, double* C, int64_t ldc, bool sub) {
  v4d c00 = {0, 0, 0, 0}, c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (int64_t k = kb; k < ke; ++k) {
    const double* b = B + k * ldb;
    const double* a = A + k * sak;
    v4d b0, b1;
    DDMINI_LOAD4(b0, b);
    DDMINI_LOAD4(b1, b + 4);
    const double a0 = a[0], a1 = a[sai], a2 = a[2 * sai], a3 = a[3 * sai];
    c00 += a0 * b0; c01 += a0 * b1;
    c10 += a1 * b0; c11 += a1 * b1;
    c20 += a2 * b0; c21 += a2 * b1;
    c30 += a3 * b0; c31 += a3 * b1;
  }
  v4d acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
  for (int64_t i = 0; i < kMR; ++i)
    for (int64_t h = 0; h < 2; ++h) {
      double* c = C + i * ldc + 4 * h;
      if (sub) {
        v4d old;
        DDMINI_LOAD4(old, c);
        acc[i][h] = old - acc[i][h];
      }
      DDMINI_STORE4(c, acc[i][h]);
    }
}
#else
DDMINI_ALWAYS_INLINE void gemm_tile_impl(int64_t kb, int64_t ke, const double* A, int64_t sai, int64_t sak,
                                        const double* B, int64_t ldb, double* C, int64_t ldc, bool sub) {
  double acc[kMR][kNR] = {};
  for (int64_t k = kb; k < ke; ++k)
    for (int64_t i = 0; i < kMR; ++i)
      for (int64_t j = 0; j < kNR; ++j) acc[i][j] += A[i * sai + k * sak] * B[k * ldb + j];
  for (int64_t i = 0; i < kMR; ++i)
    for (int64_t j = 0; j < kNR; ++j) C[i * ldc + j] = sub ? C[i * ldc + j] - acc[i][j] : acc[i][j];
}
#endif
DDMINI_MULTIVERSION(void, gemm_tile,
                    (int64_t kb, int64_t ke, const double* A, int64_t sai, int64_t sak, const double* B, int64_t ldb,
                     double* C, int64_t ldc, bool sub),
                    (kb, ke, A, sai, sak, B, ldb, C, ldc, sub))

// The same for an edge tile of mr x nr (mr <= kMR, nr <= kNR).
void gemm_tile_edge(int64_t mr, int64_t nr, int64_t kb, int64_t ke, const double* A, int64_t sai, int64_t sak,
                    const double* B, int64_t ldb, double* C, int64_t ldc, bool sub) {
  double acc[kMR][kNR] = {};
  for (int64_t k = kb; k < ke; ++k)
    for (int64_t i = 0; i < mr; ++i) {
      const double ai = A[i * sai + k * sak];
      for (int64_t j = 0; j < nr; ++j) acc[i][j] += ai * B[k * ldb + j];
    }
  for (int64_t i = 0; i < mr; ++i)
    for (int64_t j = 0; j < nr; ++j) C[i * ldc + j] = sub ? C[i * ldc + j] - acc[i][j] : acc[i][j];
}

inline void tile(int64_t mr, int64_t nr, int64_t kb, int64_t ke, const double* A, int64_t sai, int64_t sak,
                 const double* B, int64_t ldb, double* C, int64_t ldc, bool sub = false) {
  if (mr == kMR && nr == kNR)
    gemm_tile(kb, ke, A, sai, sak, B, ldb, C, ldc, sub);
  else
    gemm_tile_edge(mr, nr, kb, ke, A, sai, sak, B, ldb, C, ldc, sub);
}

// Scratch for one pair, reused across the pairs a thread handles in one batched call (fresh
// multi-megabyte buffers for every pair would cost more in page faults than some of the algebra).
struct Workspace {
  std::vector<double> A, dg, Pt, Lt, C2p, W, M, panel, diag, off, v, p, vp, wp;
  std::vector<int64_t> piv;
};

// Pivoted Cholesky of the d x d symmetric PSD matrix A (row-major, lower triangle used and
// overwritten; the upper triangle is left stale). On return the first r columns of A's lower
// triangle hold L (rows in pivoted order) and piv the permutation. Blocked like LAPACK's dpstrf:
// within a panel of kPanel columns each new column is finished left-looking (short dot products
// against the panel's earlier columns) and the Schur-complement diagonal is kept up to date for
// pivoting; the trailing block then takes the panel's whole update at once as register-blocked
// tiles (most of the d^3/3 flops).
constexpr int64_t kPanel = 32;

int64_t pivoted_cholesky(double* A, int64_t d, Workspace& ws) {
  std::vector<int64_t>& piv = ws.piv;
  std::vector<double>& dg = ws.dg;
  std::vector<double>& Pt = ws.Pt;
  piv.resize(d);
  std::iota(piv.begin(), piv.end(), 0);
  dg.resize(d);
  Pt.resize(kPanel * d);
  double maxdiag = 0.0;
  for (int64_t i = 0; i < d; ++i) maxdiag = std::max(maxdiag, dg[i] = A[i * d + i]);
  if (!(maxdiag > 0.0)) return 0;
  const double tol = static_cast<double>(d) * std::numeric_limits<double>::epsilon() * maxdiag;
  int64_t r = 0;
  for (int64_t j0 = 0; j0 < d && r == j0; j0 += kPanel) {
    const int64_t j1 = std::min(d, j0 + kPanel);
    for (int64_t j = j0; j < j1; ++j) {
      int64_t q = j;
      for (int64_t i = j + 1; i < d; ++i)
        if (dg[i] > dg[q]) q = i;
      if (!(dg[q] > tol)) break;
      if (q != j) {  // symmetric swap of rows/columns j < q, touching the lower triangle only
        for (int64_t k = 0; k < j; ++k) std::swap(A[j * d + k], A[q * d + k]);  // L rows so far
        std::swap(A[j * d + j], A[q * d + q]);
        for (int64_t k = j + 1; k < q; ++k) std::swap(A[k * d + j], A[q * d + k]);
        for (int64_t k = q + 1; k < d; ++k) std::swap(A[k * d + j], A[k * d + q]);
        std::swap(dg[j], dg[q]);
        std::swap(piv[j], piv[q]);
      }
      const double ljj = std::sqrt(dg[j]);
      A[j * d + j] = ljj;
      const double* lj = A + j * d + j0;  // row j's part in this panel
      for (int64_t i = j + 1; i < d; ++i) {
        double* ai = A + i * d;
        const double lij = (ai[j] - ddot(j - j0, ai + j0, lj)) / ljj;
        ai[j] = lij;
        dg[i] -= lij * lij;
      }
      ++r;
    }
    // Trailing block (rows/cols >= r) -= P P^T over this panel's columns j0..r-1, lower triangle.
    const int64_t nb = r - j0, n = d - r;
    if (nb == 0 || n == 0) break;
    for (int64_t p = 0; p < nb; ++p)  // P^T packed row-major (nb x n) for contiguous tile rows
      for (int64_t k = 0; k < n; ++k) Pt[p * n + k] = A[(r + k) * d + j0 + p];
    for (int64_t i0 = 0; i0 < n; i0 += kMR)
      for (int64_t k0 = 0; k0 < std::min(i0 + kMR, n); k0 += kNR)
        tile(std::min(kMR, n - i0), std::min(kNR, n - k0), 0, nb, A + (r + i0) * d + j0, d, 1, Pt.data() + k0, n,
             A + (r + i0) * d + r + k0, d, true);
  }
  return r;
}

// Four rows (row0 + q*ld, q < 4) of the fused tridiagonalisation sweep over columns j < n:
// row[j] -= a[q]*wq[j] + c[q]*vq[j] (the previous step's rank-2 update); with the updated value b,
// p[j] += vi[q]*b (the symmetric half of B v) and s[q] += b*v[j] (the row's own half). Four rows
// at once share the loads of wq, vq, v and p, which bound a one-row loop.
DDMINI_ALWAYS_INLINE void fused_rows4_impl(int64_t n, double* row0, int64_t ld, const double* a, const double* c,
                                          const double* vi, const double* wq, const double* vq, double* p,
                                          const double* v, double* s) {
  double* r0 = row0;
  double* r1 = row0 + ld;
  double* r2 = row0 + 2 * ld;
  double* r3 = row0 + 3 * ld;
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t j = 0; j < n; ++j) {
    const double w = wq[j], u = vq[j], x = v[j];
    const double b0 = r0[j] - (a[0] * w + c[0] * u);
    const double b1 = r1[j] - (a[1] * w + c[1] * u);
    const double b2 = r2[j] - (a[2] * w + c[2] * u);
    const double b3 = r3[j] - (a[3] * w + c[3] * u);
    r0[j] = b0;
    r1[j] = b1;
    r2[j] = b2;
    r3[j] = b3;
    p[j] += vi[0] * b0 + vi[1] * b1 + vi[2] * b2 + vi[3] * b3;
    s0 += b0 * x;
    s1 += b1 * x;
    s2 += b2 * x;
    s3 += b3 * x;
  }
  s[0] = s0;
  s[1] = s1;
  s[2] = s2;
  s[3] = s3;
}
DDMINI_MULTIVERSION(void, fused_rows4,
                    (int64_t n, double* row0, int64_t ld, const double* a, const double* c, const double* vi,
                     const double* wq, const double* vq, double* p, const double* v, double* s),
                    (n, row0, ld, a, c, vi, wq, vq, p, v, s))

// Householder reduction of the symmetric m x m matrix A (row-major, lower triangle read and
// overwritten) to tridiagonal form; diag gets the diagonal, off the subdiagonal (off[i] couples i
// and i+1). Step k's rank-2 update B -= v w^T + w v^T of the trailing block is not applied on its
// own: it is deferred and fused into step k+1's product B v (one sweep over the block per step
// instead of two, the block being read from memory once). Scratch: v, p, vp, wp of length m.
void tridiagonalize(double* A, int64_t m, double* diag, double* off, double* v, double* p, double* vp, double* wp) {
  // (vp, wp): the pending update of the block A[k:, k:], indexed from k; zero when there is none.
  std::fill(vp, vp + m, 0.0);
  std::fill(wp, wp + m, 0.0);
  for (int64_t k = 0; k + 2 < m; ++k) {
    const int64_t n = m - k - 1;  // size of the trailing block A[k+1:, k+1:]
    // Column k (rows k..m-1) takes the pending update first: it defines this step's reflector.
    for (int64_t i = 0; i <= n; ++i) A[(k + i) * m + k] -= vp[i] * wp[0] + wp[i] * vp[0];
    diag[k] = A[k * m + k];
    double* x = v;
    for (int64_t i = 0; i < n; ++i) x[i] = A[(k + 1 + i) * m + k];
    const double norm = std::sqrt(ddot(n, x, x));
    const double alpha = x[0] > 0 ? -norm : norm;
    off[k] = alpha;
    x[0] -= alpha;
    const double vtv = ddot(n, x, x);
    const double beta = (norm == 0.0 || vtv == 0.0) ? 0.0 : 2.0 / vtv;
    if (beta == 0.0) {  // no reflection: v = 0, the sweep below only applies the pending update
      off[k] = x[0] + alpha;
      std::fill(x, x + n, 0.0);
    }
    // Sweep B's lower triangle row by row: apply the pending update, accumulate p = B v.
    double* B0 = A + (k + 1) * m + (k + 1);
    const double* vq = vp + 1;
    const double* wq = wp + 1;
    std::fill(p, p + n, 0.0);
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
      const int64_t nq = std::min<int64_t>(4, n - i0);
      double sq[4] = {0.0, 0.0, 0.0, 0.0};
      if (nq == 4) fused_rows4(i0, B0 + i0 * m, m, vq + i0, wq + i0, x + i0, wq, vq, p, x, sq);
      for (int64_t q = 0; q < nq; ++q) {  // the rest: columns i0 .. i, and rows of a short last group
        const int64_t i = i0 + q;
        double* row = B0 + i * m;
        double si = sq[q];
        for (int64_t j = nq == 4 ? i0 : 0; j <= i; ++j) {
          const double b = row[j] - (vq[i] * wq[j] + wq[i] * vq[j]);
          row[j] = b;
          si += b * x[j];
          if (j < i) p[j] += x[i] * b;
        }
        p[i] += si;
      }
    }
    // w = beta B v - (beta^2 v^T B v / 2) v becomes the pending update of the block A[k+1:, k+1:].
    for (int64_t i = 0; i < n; ++i) p[i] *= beta;
    const double K = 0.5 * beta * ddot(n, x, p);
    for (int64_t i = 0; i < n; ++i) {
      vp[i] = x[i];
      wp[i] = p[i] - K * x[i];
    }
    vp[n] = wp[n] = 0.0;
  }
  if (m >= 2) {  // the last 2 x 2 block, with the pending update
    double* a = A + (m - 2) * m + (m - 2);
    diag[m - 2] = a[0] - 2.0 * vp[0] * wp[0];
    off[m - 2] = a[m] - (vp[1] * wp[0] + wp[1] * vp[0]);
    diag[m - 1] = a[m + 1] - 2.0 * vp[1] * wp[1];
  } else if (m == 1) {
    diag[0] = A[0];
  }
}

// sqrt(a^2 + b^2) without std::hypot's overflow-proof (and several times slower) path: the inputs
// here are entries of a covariance product, far from the 1e154 where squaring would overflow.
inline double fast_hypot(double a, double b) { return std::sqrt(a * a + b * b); }

// Eigenvalues of the symmetric tridiagonal matrix (diag, off) by the implicit QL method with
// Wilkinson shifts (values only). Returns false if an eigenvalue failed to converge.
bool tridiagonal_eigenvalues(double* d, double* e, int64_t n) {
  if (n == 0) return true;
  e[n - 1] = 0.0;
  const double eps = std::numeric_limits<double>::epsilon();
  for (int64_t l = 0; l < n; ++l) {
    int iter = 0;
    int64_t m;
    do {
      for (m = l; m < n - 1; ++m) {
        const double dd = std::fabs(d[m]) + std::fabs(d[m + 1]);
        if (std::fabs(e[m]) <= eps * dd) break;
      }
      if (m != l) {
        if (++iter > 100) return false;
        double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
        double r = fast_hypot(g, 1.0);
        g = d[m] - d[l] + e[l] / (g + std::copysign(r, g));
        double s = 1.0, c = 1.0, p = 0.0;
        int64_t i;
        for (i = m - 1; i >= l; --i) {
          double f = s * e[i], b = c * e[i];
          e[i + 1] = (r = fast_hypot(f, g));
          if (r == 0.0) {
            d[i + 1] -= p;
            e[m] = 0.0;
            break;
          }
          s = f / r;
          c = g / r;
          g = d[i + 1] - p;
          r = (d[i] - g) * s + 2.0 * c * b;
          d[i + 1] = g + (p = s * r);
          g = c * r - b;
        }
        if (r == 0.0 && i >= l) continue;
        d[l] -= p;
        e[l] = g;
        e[m] = 0.0;
      }
    } while (m != l);
  }
  return true;
}

// Largest |entry| of the lower triangle: the scale of the PSD tolerances below.
double abs_max_lower(const double* C, int64_t d) {
  double amax = 0.0;
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j <= i; ++j) amax = std::max(amax, std::fabs(C[i * d + j]));
  return amax;
}

double trace_sqrt_one(const double* C1, const double* C2, int64_t d, Workspace& ws) {
  std::vector<double>& A = ws.A;
  A.assign(C1, C1 + d * d);
  const double amax1 = abs_max_lower(C1, d);
  const int64_t r = pivoted_cholesky(A.data(), d, ws);
  // C1 is PSD iff the Schur complement left where the pivoted Cholesky stopped is zero (up to round-off,
  // ~d eps |C1|): an indefinite C1 leaves a negative pivot or a large entry there.
  for (int64_t i = r; i < d; ++i)
    for (int64_t j = r; j <= i; ++j)
      if (!(std::fabs(A[i * d + j]) <= kPsdTol * amax1)) return kNotPsd1;
  if (r == 0) return 0.0;
  const std::vector<int64_t>& piv = ws.piv;
  // Lt = L^T (r x d, zero left of the diagonal), copied out of A, whose upper triangle still holds C1.
  std::vector<double>&Lt = ws.Lt, &C2p = ws.C2p, &W = ws.W, &M = ws.M, &panel = ws.panel;
  Lt.assign(r * d, 0.0);
  C2p.resize(d * d);
  W.resize(d * r);
  M.resize(r * r);
  panel.resize(d * kNR);
  for (int64_t k0 = 0; k0 < d; k0 += 8)  // transposed in 8 x 8 blocks: both sides stay in cache
    for (int64_t j0 = 0; j0 <= std::min(k0 + 7, r - 1); j0 += 8)
      for (int64_t k = k0; k < std::min(k0 + 8, d); ++k)
        for (int64_t j = j0; j < std::min({j0 + 8, k + 1, r}); ++j) Lt[j * d + k] = A[k * d + j];
  for (int64_t i = 0; i < d; ++i)
    for (int64_t k = 0; k < d; ++k) C2p[i * d + k] = C2[piv[i] * d + piv[k]];
  // The B operand of each tile column is packed into a contiguous (k, 8) panel: read in place, its
  // rows would sit a power-of-two stride apart and evict each other from the L1 cache.
  // W = (P^T C2 P) L  (d x r). L[k][j] = 0 for k < j, so the tile column at j0 starts at k = j0.
  for (int64_t j0 = 0; j0 < r; j0 += kNR) {
    const int64_t nr = std::min(kNR, r - j0), K = d - j0;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t jj = 0; jj < kNR; ++jj) panel[k * kNR + jj] = jj < nr && jj <= k ? A[(j0 + k) * d + j0 + jj] : 0.0;
    for (int64_t i0 = 0; i0 < d; i0 += kMR)
      tile(std::min(kMR, d - i0), nr, 0, K, C2p.data() + i0 * d + j0, d, 1, panel.data(), kNR,
           W.data() + i0 * r + j0, r);
  }
  // M = L^T W (r x r, symmetric): only tiles touching the lower triangle, which is all that the
  // tridiagonalisation reads. L^T[a][k] = 0 for k < a, so the tile row at a0 starts at k = a0.
  for (int64_t b0 = 0; b0 < r; b0 += kNR) {
    const int64_t nr = std::min(kNR, r - b0);
    const int64_t a_first = b0 / kMR * kMR;  // first tile row reaching column b0's diagonal
    const int64_t kb = a_first;
    for (int64_t k = kb; k < d; ++k)
      for (int64_t bb = 0; bb < kNR; ++bb) panel[(k - kb) * kNR + bb] = bb < nr ? W[k * r + b0 + bb] : 0.0;
    for (int64_t a0 = a_first; a0 < r; a0 += kMR)
      tile(std::min(kMR, r - a0), nr, a0 - kb, d - kb, Lt.data() + a0 * d + kb, d, 1, panel.data(), kNR,
           M.data() + a0 * r + b0, r);
  }
  std::vector<double>&diag = ws.diag, &off = ws.off;
  for (std::vector<double>* vec : {&diag, &off, &ws.v, &ws.p, &ws.vp, &ws.wp}) vec->resize(r);
  tridiagonalize(M.data(), r, diag.data(), off.data(), ws.v.data(), ws.p.data(), ws.vp.data(), ws.wp.data());
  if (!tridiagonal_eigenvalues(diag.data(), off.data(), r)) return std::numeric_limits<double>::quiet_NaN();
  // L^T C2 L is PSD when C2 is: an eigenvalue below round-off means C2 is not (on the range of C1).
  double emax = 0.0, emin = 0.0;
  for (int64_t i = 0; i < r; ++i) {
    emax = std::max(emax, std::fabs(diag[i]));
    emin = std::min(emin, diag[i]);
  }
  if (emin < -kPsdTol * emax) return kNotPsd2;
  double s = 0.0;
  for (int64_t i = 0; i < r; ++i) s += std::sqrt(std::max(diag[i], 0.0));
  return s;
}

}  // namespace

void trace_sqrt_product_cpu(const double* C1, const double* C2, int64_t B, int64_t d, double* out,
                            int num_threads) {
  const int nt = B > 1 ? std::max(1, std::min<int>(num_threads, static_cast<int>(B))) : 1;
#pragma omp parallel num_threads(nt)
  {
    Workspace ws;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b) out[b] = trace_sqrt_one(C1 + b * d * d, C2 + b * d * d, d, ws);
  }
}

}  // namespace ddmini
