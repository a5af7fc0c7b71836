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
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace ddmini {
namespace {

// y[0:n] += a * x[0:n]
DDMINI_CLONES void daxpy(int64_t n, double a, const double* x, double* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

DDMINI_CLONES double ddot(int64_t n, const double* x, const double* y) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

// y[0:n] -= a * u[0:n] + b * v[0:n]
DDMINI_CLONES void drank2(int64_t n, double a, const double* u, double b, const double* v, double* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] -= a * u[i] + b * v[i];
}

// Pivoted Cholesky of the d x d symmetric PSD matrix A (row-major, overwritten). On return the
// first r columns of A's lower triangle hold L (rows in pivoted order) and piv the permutation.
int64_t pivoted_cholesky(double* A, int64_t d, std::vector<int64_t>& piv) {
  piv.resize(d);
  std::vector<double> col(d);
  std::iota(piv.begin(), piv.end(), 0);
  double maxdiag = 0.0;
  for (int64_t i = 0; i < d; ++i) maxdiag = std::max(maxdiag, A[i * d + i]);
  if (!(maxdiag > 0.0)) return 0;
  const double tol = static_cast<double>(d) * std::numeric_limits<double>::epsilon() * maxdiag;
  int64_t r = 0;
  for (int64_t j = 0; j < d; ++j) {
    int64_t q = j;
    for (int64_t i = j + 1; i < d; ++i)
      if (A[i * d + i] > A[q * d + q]) q = i;
    if (!(A[q * d + q] > tol)) break;
    if (q != j) {  // symmetric swap of rows/columns j < q, touching the lower triangle only
      for (int64_t k = 0; k < j; ++k) std::swap(A[j * d + k], A[q * d + k]);   // L rows so far
      std::swap(A[j * d + j], A[q * d + q]);
      for (int64_t k = j + 1; k < q; ++k) std::swap(A[k * d + j], A[q * d + k]);
      for (int64_t k = q + 1; k < d; ++k) std::swap(A[k * d + j], A[k * d + q]);
      std::swap(piv[j], piv[q]);
    }
    const double ljj = std::sqrt(A[j * d + j]);
    A[j * d + j] = ljj;
    for (int64_t i = j + 1; i < d; ++i) A[i * d + j] /= ljj;
    // Schur complement update of the trailing block's lower triangle, row by row:
    // A[i][k] -= L[i][j] L[k][j] for j < k <= i. Column j of L is copied to a contiguous scratch so
    // the inner loop vectorises; the upper triangle is never read again.
    for (int64_t k = j + 1; k < d; ++k) col[k] = A[k * d + j];
    for (int64_t i = j + 1; i < d; ++i)
      if (col[i] != 0.0) daxpy(i - j, -col[i], col.data() + j + 1, A + i * d + j + 1);
    ++r;
  }
  return r;
}

// Householder reduction of the symmetric m x m matrix A (row-major, overwritten) to tridiagonal
// form; diag gets the diagonal, off the subdiagonal (off[i] couples i and i+1).
void tridiagonalize(double* A, int64_t m, double* diag, double* off, double* v, double* p) {
  for (int64_t k = 0; k + 2 < m; ++k) {
    const int64_t n = m - k - 1;  // size of the trailing block
    double* x = v;                // column k below the diagonal
    for (int64_t i = 0; i < n; ++i) x[i] = A[(k + 1 + i) * m + k];
    const double norm = std::sqrt(ddot(n, x, x));
    diag[k] = A[k * m + k];
    if (norm == 0.0) {
      off[k] = 0.0;
      continue;
    }
    const double alpha = x[0] > 0 ? -norm : norm;
    off[k] = alpha;
    x[0] -= alpha;
    const double vtv = ddot(n, x, x);
    if (vtv == 0.0) continue;
    const double beta = 2.0 / vtv;
    // p = beta * B v with B the trailing block, stored in its lower triangle only: row i holds
    // B[i][0..i], which contributes to p[i] (a dot) and, by symmetry, to p[0..i) (an axpy).
    double* B0 = A + (k + 1) * m + (k + 1);
    std::fill(p, p + n, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double* row = B0 + i * m;
      daxpy(i, x[i], row, p);
      p[i] += ddot(i + 1, row, x);
    }
    for (int64_t i = 0; i < n; ++i) p[i] *= beta;
    const double K = 0.5 * beta * ddot(n, x, p);
    for (int64_t i = 0; i < n; ++i) p[i] -= K * x[i];  // w
    // B -= v w^T + w v^T, lower triangle
    for (int64_t i = 0; i < n; ++i) drank2(i + 1, x[i], p, p[i], x, B0 + i * m);
  }
  if (m >= 2) {
    diag[m - 2] = A[(m - 2) * m + (m - 2)];
    off[m - 2] = A[(m - 1) * m + (m - 2)];
  }
  if (m >= 1) diag[m - 1] = A[(m - 1) * m + (m - 1)];
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

double trace_sqrt_one(const double* C1, const double* C2, int64_t d) {
  std::vector<double> A(C1, C1 + d * d);
  std::vector<int64_t> piv;
  const int64_t r = pivoted_cholesky(A.data(), d, piv);
  if (r == 0) return 0.0;
  // W = (P^T C2 P) L  (d x r); L[k][j] = A[k*d + j] for j <= k < d, j < r.
  std::vector<double> C2p(d * d), W(d * r, 0.0), M(r * r, 0.0);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t k = 0; k < d; ++k) C2p[i * d + k] = C2[piv[i] * d + piv[k]];
  for (int64_t i = 0; i < d; ++i) {
    double* w = W.data() + i * r;
    const double* c = C2p.data() + i * d;
    for (int64_t k = 0; k < d; ++k) daxpy(std::min(k + 1, r), c[k], A.data() + k * d, w);
  }
  // M = L^T W (r x r)
  for (int64_t k = 0; k < d; ++k) {
    const double* w = W.data() + k * r;
    const int64_t top = std::min(k + 1, r);
    for (int64_t a = 0; a < top; ++a) daxpy(r, A[k * d + a], w, M.data() + a * r);
  }
  for (int64_t a = 0; a < r; ++a)  // symmetrise away round-off
    for (int64_t b = a + 1; b < r; ++b) M[a * r + b] = M[b * r + a] = 0.5 * (M[a * r + b] + M[b * r + a]);
  std::vector<double> diag(r), off(r), v(r), p(r);
  tridiagonalize(M.data(), r, diag.data(), off.data(), v.data(), p.data());
  if (!tridiagonal_eigenvalues(diag.data(), off.data(), r)) return std::numeric_limits<double>::quiet_NaN();
  double s = 0.0;
  for (int64_t i = 0; i < r; ++i) s += std::sqrt(std::max(diag[i], 0.0));
  return s;
}

}  // namespace

void trace_sqrt_product_cpu(const double* C1, const double* C2, int64_t B, int64_t d, double* out,
                            int num_threads) {
  const int nt = B > 1 ? std::max(1, std::min<int>(num_threads, static_cast<int>(B))) : 1;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t b = 0; b < B; ++b) out[b] = trace_sqrt_one(C1 + b * d * d, C2 + b * d * d, d);
}

}  // namespace ddmini
