"""`neutrino token create | list | revoke`, run in this process against the test database."""

from __future__ import annotations

import pytest

from neutrino_site.cli import build_parser, main
from tasks_app.models import ApiToken
from tasks_app.services.tokens import hash_secret

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_prints_the_token_once_and_stores_its_hash(capsys) -> None:
    assert main(["token", "create", "ci"]) == 0
    out, err = capsys.readouterr()
    plaintext = out.strip()
    assert plaintext.startswith("ntr_") and "shown once" in err
    token = ApiToken.objects.get(name="ci")
    assert token.secret_hash == hash_secret(plaintext) and plaintext not in (token.prefix, token.secret_hash)


def test_list_shows_names_and_prefixes_never_secrets(capsys) -> None:
    main(["token", "create", "reports"])
    plaintext = capsys.readouterr().out.strip()
    assert main(["token", "list"]) == 0
    out = capsys.readouterr().out
    assert "reports" in out and plaintext[:12] in out and plaintext not in out


def test_revoke_by_name_or_prefix_and_the_errors(capsys) -> None:
    main(["token", "create", "one"])
    main(["token", "create", "two"])
    two = capsys.readouterr().out.split()[1]
    assert main(["token", "revoke", "one"]) == 0
    assert main(["token", "revoke", two[:12]]) == 0
    assert "revoked token 'two'" in capsys.readouterr().out
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 0
    assert main(["token", "revoke", "one"]) == 1
    assert "no live token" in capsys.readouterr().err
    main(["token", "create", "dup"])
    assert main(["token", "create", "dup"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["token", "list"]) == 0 and "dup" in capsys.readouterr().out
    main(["token", "list", "--all"])
    assert "one" in capsys.readouterr().out


def test_dev_takes_require_token() -> None:
    assert build_parser().parse_args(["dev", "--require-token"]).require_token is True
    assert build_parser().parse_args(["dev"]).require_token is False
