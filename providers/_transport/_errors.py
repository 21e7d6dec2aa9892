"""The one place where curl_cffi's errors become ``ProviderError``s (through its public error codes only)."""

from __future__ import annotations

from curl_cffi import CurlError
from curl_cffi.const import CurlECode

from .._exceptions import ConnectError, ProviderTimeout, StreamError, TransportError

# curl error code -> the error raised when it happens before any response (connect phase). The test
# ``test_every_curl_error_is_mapped`` checks that every code curl_cffi knows is covered.
CONNECT_ERRORS: dict[int, type[TransportError]] = {
    CurlECode.COULDNT_RESOLVE_PROXY: ConnectError,
    CurlECode.COULDNT_RESOLVE_HOST: ConnectError,
    CurlECode.COULDNT_CONNECT: ConnectError,
    CurlECode.SSL_CONNECT_ERROR: ConnectError,
    CurlECode.PEER_FAILED_VERIFICATION: ConnectError,
    CurlECode.SSL_CERTPROBLEM: ConnectError,
    CurlECode.SSL_CIPHER: ConnectError,
    CurlECode.SSL_CACERT_BADFILE: ConnectError,
    CurlECode.SSL_CRL_BADFILE: ConnectError,
    CurlECode.SSL_ISSUER_ERROR: ConnectError,
    CurlECode.SSL_PINNEDPUBKEYNOTMATCH: ConnectError,
    CurlECode.SSL_INVALIDCERTSTATUS: ConnectError,
    CurlECode.SSL_ENGINE_NOTFOUND: ConnectError,
    CurlECode.SSL_ENGINE_SETFAILED: ConnectError,
    CurlECode.SSL_ENGINE_INITFAILED: ConnectError,
    CurlECode.SSL_CLIENTCERT: ConnectError,
    CurlECode.ECH_REQUIRED: ConnectError,
    CurlECode.QUIC_CONNECT_ERROR: ConnectError,
    CurlECode.PROXY: ConnectError,
    CurlECode.INTERFACE_FAILED: ConnectError,
    CurlECode.REMOTE_ACCESS_DENIED: ConnectError,
    CurlECode.OPERATION_TIMEDOUT: ProviderTimeout,
    # The server dropped or garbled the exchange before answering: retryable like a refused connection.
    CurlECode.GOT_NOTHING: TransportError,
    CurlECode.SEND_ERROR: TransportError,
    CurlECode.RECV_ERROR: TransportError,
    CurlECode.WEIRD_SERVER_REPLY: TransportError,
    CurlECode.HTTP2: TransportError,
    CurlECode.HTTP2_STREAM: TransportError,
    CurlECode.HTTP3: TransportError,
    CurlECode.PARTIAL_FILE: TransportError,
    CurlECode.BAD_CONTENT_ENCODING: TransportError,
    CurlECode.WRITE_ERROR: TransportError,
    CurlECode.READ_ERROR: TransportError,
    CurlECode.SEND_FAIL_REWIND: TransportError,
    CurlECode.TOO_MANY_REDIRECTS: TransportError,
    CurlECode.HTTP_RETURNED_ERROR: TransportError,
    CurlECode.OUT_OF_MEMORY: TransportError,
}
# Codes that mean a bug or a bad argument on our side, not a network failure.
MISUSE_CODES = {
    0,
    CurlECode.UNSUPPORTED_PROTOCOL,
    CurlECode.URL_MALFORMAT,
    CurlECode.UNKNOWN_OPTION,
    CurlECode.SETOPT_OPTION_SYNTAX,
}


def translate_curl_error(exc: CurlError, *, url: str, in_body: bool) -> Exception:
    """Map a curl_cffi error to our tree: the one place third-party errors are translated.

    Args:
        exc: the error curl_cffi raised (a ``CurlError`` or a ``curl_cffi.requests`` exception).
        url: the request URL, for the message.
        in_body: True once the response status was received; a break then is a truncated stream.
    """
    code = int(getattr(exc, "code", 0) or 0)
    message = f"{url}: {exc}"
    if code in MISUSE_CODES:
        return ValueError(message)
    if code == CurlECode.OPERATION_TIMEDOUT:
        return ProviderTimeout(f"{url}: no data within the idle timeout", url=url)
    if in_body:
        return StreamError(f"{url}: the stream broke off: {exc}", url=url)
    return CONNECT_ERRORS.get(code, TransportError)(message, url=url)
