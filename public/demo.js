// Helpers shared by the demo pages: names from the URL, a per-tab password,
// and showing what the call is doing. Load after signal_channel.js and webrtc.js.

const demoParams = new URLSearchParams(location.search);

function demoParam(name, fallback) {
  return demoParams.get(name) || fallback;
}

/**
 * The inbox password: `?password=` if given, else a random one kept for this tab,
 * so a reload still opens the same inbox (another password would get 401).
 */
function demoPassword(name) {
  const given = demoParams.get('password');
  if (given !== null) return given;
  const key = `inbox-asgi password ${name}`;
  let password = sessionStorage.getItem(key);
  if (!password) {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    password = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    sessionStorage.setItem(key, password);
  }
  return password;
}

/**
 * A SignalingChannel for this page, not yet polling. `?server=` points it at an
 * inbox-asgi on another origin (which must then run with --cors).
 */
function demoChannel(from, to) {
  return new SignalingChannel({
    server: demoParam('server', ''), from, to, password: demoPassword(from), autoConnect: false,
  });
}

/** A link to this demo's other page, with the names swapped (and the same ?server=). */
function demoPeerLink(page, params) {
  const url = new URL(page, location.href);
  if (demoParams.has('server')) url.searchParams.set('server', demoParams.get('server'));
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return url.href;
}

/** Mirror the call's connection state and errors into #state and #error. */
function demoShowState(call, channel) {
  const state = document.getElementById('state');
  const error = document.getElementById('error');
  const show = (text) => { state.textContent = text; state.dataset.state = text; };
  call.addEventListener('statechange', (e) => {
    show(e.detail);
    if (e.detail === 'connected') error.textContent = '';
  });
  const report = (e) => {
    const detail = e.detail;
    error.textContent = detail.status === 401
      ? 'This name is taken on the server (by another password). Choose other names in the URL.'
      : String(detail.message || detail);
  };
  channel.addEventListener('error', report);
  call.addEventListener('error', report);
  show(call.status === 'new' ? 'waiting for the other side' : call.status);
}
