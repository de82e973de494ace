"""Test-only oracle: the exact posterior of the eight-schools model by scipy quadrature.

Written independently of ``jaxschools.core.exact`` (plain numpy/scipy, a different rule: adaptive
``scipy.integrate.quad`` over log tau). Given tau, mu | tau, y is Gaussian (BDA3 eqs. 5.20-5.21), so
every quantity below is a 1-D integral over log tau of a closed-form conditional quantity.
"""

import functools

import numpy as np
from scipy import integrate, special, stats


class Oracle:
    """Exact posterior summaries for data (y, sigma) under a prior on (mu, tau)."""

    def __init__(self, y, sigma, prior="flat", mu_loc=0.0, mu_scale=5.0, tau_scale=5.0):
        self.y = np.asarray(y, float)
        self.sigma = np.asarray(sigma, float)
        self.prior, self.mu_loc, self.mu_scale, self.tau_scale = prior, mu_loc, mu_scale, tau_scale
        grid = np.linspace(-15, 10, 2001) + np.log(np.median(self.sigma))
        values = np.array([self._log_unnormalised(l) for l in grid])
        self.peak = values.max()
        self.center = grid[np.argmax(values)]
        self.norm = self._integrate(lambda l: 1.0)

    def _mu_given_tau(self, tau):
        """Mean and variance of mu | tau, y and the log of the mu-integral (with all constants)."""
        v = self.sigma**2 + tau**2
        precision = np.sum(1 / v)
        weighted = np.sum(self.y / v)
        if self.prior != "flat":
            precision += 1 / self.mu_scale**2
            weighted += self.mu_loc / self.mu_scale**2
        mu_hat = weighted / precision
        var_mu = 1 / precision
        # log of  integral over mu of  prod_j N(y_j | mu, v_j) * p(mu)
        resid = np.sum((self.y - mu_hat) ** 2 / v)
        log_int = -0.5 * np.sum(np.log(2 * np.pi * v)) - 0.5 * resid + 0.5 * np.log(2 * np.pi * var_mu)
        if self.prior != "flat":
            log_int += -0.5 * np.log(2 * np.pi * self.mu_scale**2) - 0.5 * (mu_hat - self.mu_loc) ** 2 / self.mu_scale**2
        return mu_hat, var_mu, log_int

    def _log_tau_prior(self, tau):
        if self.prior == "flat":
            return 0.0
        if self.prior == "half_cauchy":
            return stats.halfcauchy.logpdf(tau, scale=self.tau_scale)
        return stats.halfnorm.logpdf(tau, scale=self.tau_scale)

    def _log_unnormalised(self, log_tau):
        tau = np.exp(log_tau)
        return self._mu_given_tau(tau)[2] + self._log_tau_prior(tau) + log_tau

    def _integrate(self, fn):
        def integrand(l):
            return np.exp(self._log_unnormalised(l) - self.peak) * fn(l)

        lo, hi = self.center - 40.0, self.center + 60.0
        points = [self.center - 3, self.center, self.center + 3]
        value, _ = integrate.quad(integrand, lo, hi, points=points, limit=500, epsabs=0, epsrel=1e-12)
        return value

    def expect(self, fn):
        """E[fn(log tau)] under the posterior of log tau."""
        return self._integrate(fn) / self.norm

    def log_evidence(self):
        return np.log(self.norm) + self.peak

    def log_tau_cdf(self, x):
        return self._integrate_upto(x) / self.norm

    def _integrate_upto(self, x):
        value, _ = integrate.quad(
            lambda l: np.exp(self._log_unnormalised(l) - self.peak), self.center - 40.0, x, limit=500, epsrel=1e-12
        )
        return value

    def log_tau_quantile(self, q):
        from scipy.optimize import brentq

        return brentq(lambda x: self.log_tau_cdf(x) - q, self.center - 40, self.center + 60, xtol=1e-12)

    # Conditional moments of theta given tau (mu integrated out).
    def _theta_given_tau(self, log_tau):
        tau = np.exp(log_tau)
        mu_hat, var_mu, _ = self._mu_given_tau(tau)
        b = self.sigma**2 / (self.sigma**2 + tau**2)
        mean = (1 - b) * self.y + b * mu_hat
        cond_var = (1 - b) * self.sigma**2
        return mean, cond_var, b, var_mu

    def mu_mean(self):
        return self.expect(lambda l: self._mu_given_tau(np.exp(l))[0])

    def theta_mean(self, j):
        return self.expect(lambda l: self._theta_given_tau(l)[0][j])

    def shrinkage(self, j):
        return self.expect(lambda l: self._theta_given_tau(l)[2][j])

    def p_exceeds(self, j, c):
        def fn(l):
            mean, cond_var, b, var_mu = self._theta_given_tau(l)
            return stats.norm.sf(c, mean[j], np.sqrt(cond_var[j] + b[j] ** 2 * var_mu))

        return self.expect(fn)

    def p_greater(self, i, j):
        def fn(l):
            mean, cond_var, b, var_mu = self._theta_given_tau(l)
            var = cond_var[i] + cond_var[j] + (b[i] - b[j]) ** 2 * var_mu
            if var <= 0.0:  # tau underflowed to 0: theta_i = theta_j = mu (weight there is negligible)
                return 0.5
            return special.ndtr((mean[i] - mean[j]) / np.sqrt(var))

        return self.expect(fn)


@functools.lru_cache(maxsize=None)
def eight_schools_oracle(prior="flat"):
    return Oracle([28, 8, -3, 7, -1, 1, 18, 12], [15, 10, 16, 11, 9, 11, 10, 18], prior)
