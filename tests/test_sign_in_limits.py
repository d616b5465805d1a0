"""Sign-in throttling behind the PaaS router: per client address (from X-Forwarded-For) and per operator name."""
import pytest

from bot.app import create_app
from tests.conftest import sign_in


def _client(settings, redis, hops: int, address: str):
    """A browser whose requests reach us through ``hops`` proxies, the first having seen ``address``."""
    client = create_app(settings.replace(trusted_proxy_hops=hops), redis=redis).test_client()
    client.environ_base.update(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=address)  # the router's address
    return client


@pytest.fixture
def behind_router(settings, redis):
    return lambda address: _client(settings, redis, 1, address)


def test_one_addresss_mistakes_do_not_lock_out_the_team(behind_router):
    typist = behind_router("203.0.113.5")
    for _ in range(5):
        assert sign_in(typist, password="nope").status_code == 401
    assert sign_in(typist).status_code == 429
    assert sign_in(behind_router("198.51.100.7"), name="suzuki").status_code == 302


def test_a_guesser_spread_over_many_addresses_is_still_held_on_each_account(behind_router):
    for n in range(10):
        assert sign_in(behind_router(f"192.0.2.{n}"), password="guess").status_code == 401
    assert sign_in(behind_router("192.0.2.99")).status_code == 429  # sato's account waits out the lockout
    assert sign_in(behind_router("192.0.2.99"), name="suzuki").status_code == 302  # the others do not


def test_without_a_trusted_proxy_a_forged_forwarded_header_changes_nothing(settings, redis):
    for n in range(5):
        assert sign_in(_client(settings, redis, 0, f"192.0.2.{n}"), password="nope").status_code == 401
    assert sign_in(_client(settings, redis, 0, "192.0.2.200"), name="suzuki").status_code == 429
