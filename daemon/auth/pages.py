"""Small server-rendered pages of the authorization flow.

Readable without JavaScript, every value escaped, and never a token, code,
secret or verifier in the page or in a URL it links to.
"""

from __future__ import annotations

from html import escape

from daemon.auth.explain import AuthProblem

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}"
    "code{background:#f2f2f2;padding:.1rem .3rem;border-radius:3px;word-break:break-all}"
    ".button{display:inline-block;background:#0067b8;color:#fff;padding:.6rem 1.2rem;text-decoration:none;border-radius:3px}"
    ".error{border-left:4px solid #c50f1f;padding-left:1rem}.ok{border-left:4px solid #107c10;padding-left:1rem}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta name='referrer' content='no-referrer'>"
        f"<title>{escape(title)} - m365sync</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def redirect_uri_list(uris: list[tuple[str, str]]) -> str:
    items = "".join(f"<li>{escape(label)}: <code class='redirect-uri'>{escape(uri)}</code></li>" for label, uri in uris)
    return f"<ul>{items}</ul>"


def start_page(tenant: str, uris: list[tuple[str, str]], continue_url: str, mode: str) -> str:
    """Shows the redirect URIs to register, then links on to Microsoft."""
    platform = "Mobile and desktop applications" if mode == "delegated" else "Web"
    action = "Continue to Microsoft sign-in" if mode == "delegated" else "Continue to admin consent"
    return _page(
        f"Connect {tenant} to Microsoft 365",
        "<p>Register these redirect URIs in Entra ID &gt; App registrations &gt; your app &gt; "
        f"Authentication, under <strong>{escape(platform)}</strong>, exactly as shown (no trailing slash):</p>"
        f"{redirect_uri_list(uris)}"
        f"<p><a class='button' id='continue' href='{escape(continue_url)}'>{escape(action)}</a></p>"
        "<p>This link works once and expires in 15 minutes.</p>",
    )


def success_page(tenant: str, owner: str, directory_id: str) -> str:
    return _page(
        "Microsoft 365 connected",
        f"<div class='ok'><p id='result'>Tenant <strong>{escape(tenant)}</strong> is authorized as "
        f"<strong id='owner'>{escape(owner)}</strong> (directory <code>{escape(directory_id)}</code>).</p>"
        "<p>The first sync starts now. You can close this page.</p></div>",
    )


def error_page(problem: AuthProblem, context_lines: list[str] | None = None) -> str:
    actions = "".join(f"<li>{escape(a)}</li>" for a in problem.actions)
    extra = "".join(f"<p>{escape(line)}</p>" for line in context_lines or [])
    return _page(
        problem.title,
        f"<div class='error'><p id='code'><code>{escape(problem.code)}</code></p>"
        f"<p id='explanation'>{escape(problem.explanation)}</p>{extra}"
        f"<h2>What to do</h2><ol>{actions}</ol></div>",
    )


def refused_page(title: str, message: str) -> str:
    return _page(title, f"<div class='error'><p id='explanation'>{escape(message)}</p></div>")
