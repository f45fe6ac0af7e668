// Portcullis security console: the only script (CSP: script-src 'self'). Without it every
// page still works; with it the events table refreshes itself every 5 seconds.
'use strict';
(function () {
  const rows = document.getElementById('event-rows');
  if (!rows || !rows.dataset.refresh) return;
  const url = rows.dataset.refresh;
  async function refresh() {
    try {
      const answer = await fetch(url, { credentials: 'same-origin', headers: { 'X-Requested-With': 'fetch' } });
      if (answer.ok && answer.headers.get('content-type').startsWith('text/html')) {
        // The server escapes every value; the fragment holds table rows only.
        const parsed = new DOMParser().parseFromString('<table><tbody>' + await answer.text() + '</tbody></table>', 'text/html');
        const fresh = parsed.querySelector('tbody');
        if (fresh) rows.replaceChildren(...fresh.children);
      }
    } catch (e) {
      // Offline for a moment: the next tick tries again.
    }
  }
  setInterval(refresh, 5000);
})();
