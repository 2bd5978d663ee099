"""Slack's side of OAuth v2 for the emulator: the consent page, codes, issued tokens, rotation, revocation.

`GET /oauth/v2/authorize` plays the browser step: the user (``user=``, default the team's first person)
of the team (``team=``, default the emulator's first team) approves at once and is redirected to the
redirect URI with ``code`` and ``state`` (``deny=1`` plays "Cancel": ``error=access_denied``).
``oauth.v2.access`` exchanges a code, or (``grant_type=refresh_token``) a refresh token, for tokens.
Issued tokens are accepted by every method until they expire (``token_expired``) or are revoked
(``invalid_auth``), as on Slack.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from bot.devkit.emulator_state import EmulatorState, SlackError, Workspace

CODE_TTL = 600.0


@dataclass
class OAuthApp:
    """The app's credentials as Slack knows them."""

    client_id: str
    client_secret: str
    redirect_uri: str | None = None
    token_rotation: bool = False
    expires_in: int = 43200


@dataclass
class Grant:
    """A code issued by the consent page, exchangeable once."""

    team_id: str
    user_id: str
    scopes: str
    user_scopes: str
    redirect_uri: str | None
    issued_at: float


@dataclass
class IssuedToken:
    """A token handed out by oauth.v2.access."""

    token: str
    team_id: str
    kind: str  # "bot" | "user"
    user_id: str
    scopes: str
    expires_at: float | None = None
    revoked: bool = False


@dataclass
class OAuthState:
    """Everything OAuth in one emulator (guarded by the emulator's lock)."""

    app: OAuthApp | None = None
    grants: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    refresh: dict[str, IssuedToken] = field(default_factory=dict)
    revoked_static: set[str] = field(default_factory=set)


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """client_id and client_secret from an Authorization: Basic header."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


def authorize_redirect(state: EmulatorState, oauth: OAuthState, query: str) -> tuple[int, str, str]:
    """The consent page: (status, Location or "", text). Approves at once unless deny=1."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    app = oauth.app
    if app is None or params.get("client_id") != app.client_id:
        return 400, "", "invalid_client_id: this app is not known to the emulator (enable_oauth first)"
    redirect_uri = params.get("redirect_uri") or app.redirect_uri
    if not redirect_uri:
        return 400, "", "bad_redirect_uri: no redirect_uri given and none configured"
    if app.redirect_uri and params.get("redirect_uri") and params["redirect_uri"] != app.redirect_uri:
        return 400, "", "bad_redirect_uri: does not match the app's configured redirect URL"
    back = {"state": params.get("state", "")}
    if params.get("deny"):
        back["error"] = "access_denied"
    else:
        try:
            ws = state.team(params.get("team") or None)
        except KeyError:
            return 400, "", f"unknown team {params.get('team')!r}"
        code = f"{int(time.time())}.{secrets.token_hex(12)}"
        oauth.grants[code] = Grant(
            team_id=ws.team_id,
            user_id=_installer(ws, params.get("user")),
            scopes=params.get("scope", ""),
            user_scopes=params.get("user_scope", ""),
            redirect_uri=params.get("redirect_uri"),
            issued_at=time.time(),
        )
        back["code"] = code
    joiner = "&" if "?" in redirect_uri else "?"
    return 302, f"{redirect_uri}{joiner}{urlencode(back)}", "redirecting"


def _installer(ws: Workspace, ref: str | None) -> str:
    if ref:
        for user in ws.users.values():
            if ref in (user["id"], user.get("name")):
                return str(user["id"])
    people = [u for u in ws.users.values() if not u.get("is_bot") and u["id"] != ws.bot_user_id]
    return str(people[0]["id"]) if people else "U0INSTALLER"


def oauth_v2_access(
    state: EmulatorState, oauth: OAuthState, params: dict, basic: tuple[str, str] | None
) -> dict:
    """oauth.v2.access: a code (install) or a refresh token (rotation) for tokens."""
    app = oauth.app
    client_id, secret = basic or (params.get("client_id", ""), params.get("client_secret", ""))
    if app is None or client_id != app.client_id:
        raise SlackError("invalid_client_id")
    if secret != app.client_secret:
        raise SlackError("bad_client_secret")
    if params.get("grant_type") == "refresh_token":
        return _refresh(state, oauth, app, params.get("refresh_token") or "")
    grant = oauth.grants.pop(params.get("code") or "", None)
    if grant is None or time.time() - grant.issued_at > CODE_TTL:
        raise SlackError("invalid_code")
    if grant.redirect_uri and params.get("redirect_uri") != grant.redirect_uri:
        raise SlackError("bad_redirect_uri")
    ws = state.team(grant.team_id)
    bot = _issue(oauth, app, ws, "bot", ws.bot_user_id, grant.scopes)
    result: dict = {
        "ok": True,
        "app_id": ws.app_id,
        "authed_user": {"id": grant.user_id},
        "scope": grant.scopes,
        "token_type": "bot",
        "access_token": bot.token,
        "bot_user_id": ws.bot_user_id,
        "team": {"id": ws.team_id, "name": ws.team_name},
        "enterprise": None,
        "is_enterprise_install": False,
    }
    result.update(_expiry_fields(oauth, bot))
    if grant.user_scopes:
        user = _issue(oauth, app, ws, "user", grant.user_id, grant.user_scopes)
        authed = {
            "id": grant.user_id,
            "scope": grant.user_scopes,
            "access_token": user.token,
            "token_type": "user",
        }
        authed.update(_expiry_fields(oauth, user))
        result["authed_user"] = authed
    return result


def _refresh(state: EmulatorState, oauth: OAuthState, app: OAuthApp, refresh_token: str) -> dict:
    old = oauth.refresh.get(refresh_token)
    if old is None or old.revoked:
        raise SlackError("invalid_refresh_token")
    ws = state.team(old.team_id)
    new = _issue(oauth, app, ws, old.kind, old.user_id, old.scopes, rotating=True)
    result: dict = {
        "ok": True,
        "app_id": ws.app_id,
        "scope": new.scopes,
        "token_type": new.kind,
        "access_token": new.token,
        "team": {"id": ws.team_id, "name": ws.team_name},
        "enterprise": None,
        "is_enterprise_install": False,
    }
    if new.kind == "bot":
        result["bot_user_id"] = ws.bot_user_id
    else:
        result["user_id"] = new.user_id
    result.update(_expiry_fields(oauth, new))
    return result


def _issue(
    oauth: OAuthState,
    app: OAuthApp,
    ws: Workspace,
    kind: str,
    user_id: str,
    scopes: str,
    *,
    rotating: bool | None = None,
) -> IssuedToken:
    """A new access token (rotating: `xoxe.`-prefixed, expiring, with a refresh token)."""
    rotating = app.token_rotation if rotating is None else rotating
    prefix = "xoxb" if kind == "bot" else "xoxp"
    raw = f"{prefix}-{ws.team_id}-{secrets.token_hex(12)}"
    token = IssuedToken(
        token=f"xoxe.{raw}" if rotating else raw,
        team_id=ws.team_id,
        kind=kind,
        user_id=user_id,
        scopes=scopes,
        expires_at=time.time() + app.expires_in if rotating else None,
    )
    oauth.tokens[token.token] = token
    if rotating:
        oauth.refresh[f"xoxe-1-{secrets.token_hex(16)}"] = token
    return token


def _expiry_fields(oauth: OAuthState, token: IssuedToken) -> dict:
    if token.expires_at is None:
        return {}
    refresh = next(r for r, t in oauth.refresh.items() if t is token)
    return {"refresh_token": refresh, "expires_in": max(0, int(token.expires_at - time.time()))}


def resolve_token(state: EmulatorState, oauth: OAuthState, token: str) -> tuple[Workspace, str | None] | None:
    """The workspace of a token and, for a user token, its user; None when unknown or revoked.

    Raises SlackError("token_expired") for an issued token past its expiry.
    """
    issued = oauth.tokens.get(token)
    if issued is not None:
        if issued.revoked:
            return None
        if issued.expires_at is not None and issued.expires_at <= time.time():
            raise SlackError("token_expired")
        return state.team(issued.team_id), (issued.user_id if issued.kind == "user" else None)
    if token in oauth.revoked_static:
        return None
    ws = state.workspace_for_token(token)
    return (ws, None) if ws is not None else None


def revoke(
    state: EmulatorState, oauth: OAuthState, team_id: str, *, bot: bool, users: list[str] | None
) -> list[str]:
    """Revokes a team's tokens (the bot's, and those of `users`, or every user's when None); returns them."""
    done = []
    for issued in list(oauth.tokens.values()) + list(oauth.refresh.values()):
        if issued.team_id != team_id or issued.revoked:
            continue
        if (issued.kind == "bot" and bot) or (
            issued.kind == "user" and (users is None or issued.user_id in users)
        ):
            issued.revoked = True
            done.append(issued.token)
    if bot:
        ws = state.team(team_id)
        oauth.revoked_static.add(ws.bot_token)
        done.append(ws.bot_token)
    return done
