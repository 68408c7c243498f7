"""What checking an inbox password costs: PasswordDigest.matches, in µs per check.

    .venv/bin/python bench/passwords.py            # matches(), right and wrong, and PasswordDigest.of()
    .venv/bin/python bench/passwords.py --kdfs     # the same next to slow KDFs, for scale

Every request authenticates, so the check runs once per GET and POST. Each
figure is the median of `--rounds` rounds of `--number` calls (timeit, garbage
collection off), for a 32-character password like a random session secret.
Wrong passwords cost the same as right ones: the digest is always computed
and compared in constant time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import timeit
from collections.abc import Callable

from inbox_asgi.mailbox.passwords import PasswordDigest


def per_call_us(function: Callable[[], object], number: int, rounds: int) -> float:
    """Median over `rounds` of the mean time of `number` calls, in µs."""
    times = timeit.repeat(function, number=number, repeat=rounds)
    return statistics.median(times) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the median is shown")
    parser.add_argument("--kdfs", action="store_true", help="also time scrypt and PBKDF2 for scale")
    options = parser.parse_args()

    password = os.urandom(24).hex()[:32]
    wrong = password[:-1] + ("0" if password[-1] != "0" else "1")
    digest = PasswordDigest.of(password)
    rows = [
        ("PasswordDigest.matches (right password)", lambda: digest.matches(password), options.number),
        ("PasswordDigest.matches (wrong password)", lambda: digest.matches(wrong), options.number),
        ("PasswordDigest.of (new inbox, fresh salt)", lambda: PasswordDigest.of(password), options.number),
    ]
    if options.kdfs:
        salt = os.urandom(16)
        secret = password.encode()
        rows += [
            ("scrypt n=2^14 r=8 p=1", lambda: hashlib.scrypt(secret, salt=salt, n=2**14, r=8, p=1), 5),
            (
                "PBKDF2-SHA256 600000 iterations",
                lambda: hashlib.pbkdf2_hmac("sha256", secret, salt, 600_000),
                2,
            ),
        ]
    print(f"median of {options.rounds} rounds, µs per call")
    for label, function, number in rows:
        print(f"  {label:<44} {per_call_us(function, number, options.rounds):>12.2f}")


if __name__ == "__main__":
    main()
