"""Built-in datasets as plain Python tables (no JAX), in the shape ``validation.read_table`` returns."""

__all__ = ["EIGHT_SCHOOLS", "BCG", "NORMAND1999", "BUILT_IN", "CITATIONS"]

# BDA3 Table 5.2 (Rubin 1981): estimated coaching effects on SAT-V scores and their standard errors.
EIGHT_SCHOOLS = {
    "names": ["A", "B", "C", "D", "E", "F", "G", "H"],
    "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
    "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
}


# Colditz et al. (1994), "Efficacy of BCG vaccine in the prevention of tuberculosis: meta-analysis of the
# published literature", JAMA 271(9), 698-702: 13 trials; tuberculosis cases (ai, ci) and non-cases (bi, di)
# among vaccinated and unvaccinated people. The usual measure is the log risk ratio (RR).
BCG = {
    "names": [
        "Aronson 1948", "Ferguson & Simes 1949", "Rosenthal et al 1960", "Hart & Sutherland 1977",
        "Frimodt-Moller et al 1973", "Stein & Aronson 1953", "Vandiviere et al 1973", "TPT Madras 1980",
        "Coetzee & Berjak 1968", "Rosenthal et al 1961", "Comstock et al 1974", "Comstock & Webster 1969",
        "Comstock et al 1976",
    ],
    "ai": [4, 6, 3, 62, 33, 180, 8, 505, 29, 17, 186, 5, 27],
    "bi": [119, 300, 228, 13536, 5036, 1361, 2537, 87886, 7470, 1699, 50448, 2493, 16886],
    "ci": [11, 29, 11, 248, 47, 372, 10, 499, 45, 65, 141, 3, 29],
    "di": [128, 274, 209, 12619, 5761, 1079, 619, 87892, 7232, 1600, 27197, 2338, 17825],
    "measure": "RR",
}

# Normand (1999), "Meta-analysis: formulating, evaluating, combining, and reporting", Statistics in Medicine
# 18(3), 321-359: nine trials of specialist inpatient stroke care against routine care; length of hospital
# stay in days (mean, sd, size; group 1 specialist care). The usual measure is the mean difference (MD).
NORMAND1999 = {
    "names": [
        "Edinburgh", "Orpington-Mild", "Orpington-Moderate", "Orpington-Severe", "Montreal-Home",
        "Montreal-Transfer", "Newcastle", "Umea", "Uppsala",
    ],
    "m1i": [55, 27, 64, 66, 14, 19, 52, 21, 30],
    "sd1i": [47, 7, 17, 20, 8, 7, 45, 16, 27],
    "n1i": [155, 31, 75, 18, 8, 57, 34, 110, 60],
    "m2i": [75, 29, 119, 137, 18, 18, 41, 31, 23],
    "sd2i": [64, 4, 29, 48, 11, 4, 34, 27, 20],
    "n2i": [156, 32, 71, 18, 13, 52, 33, 183, 52],
    "measure": "MD",
}


# The datasets ``data.dataset`` (and ``--data NAME``) can name, each with the citation the report gives.
BUILT_IN = {"eight_schools": EIGHT_SCHOOLS, "bcg": BCG, "normand1999": NORMAND1999}
CITATIONS = {
    "eight_schools": "Rubin (1981), J. Educational Statistics 6(4), 377-401; Gelman et al., BDA3, Table 5.2",
    "bcg": "Colditz et al. (1994), JAMA 271(9), 698-702",
    "normand1999": "Normand (1999), Statistics in Medicine 18(3), 321-359",
}


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
