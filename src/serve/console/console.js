//! persona console: the behaviour of the chatters' page (index.html, served by
//! `persona serve --console`).
//!
//! Logs in with the server's bearer token (kept in sessionStorage only), lists a creator's fans
//! and pending drafts, opens one conversation with its drafts and why they were written, and
//! approves, edits, regenerates or rejects them. Every call goes through `api()`. The page is
//! built with DOM calls and textContent only (the CSP forbids inline code, inline styles and
//! innerHTML would let data run), and polls the server every few seconds while visible.
'use strict';

const POLL_MS = 4000;
const TOKEN_KEY = 'persona-console-token';

const state = {
  token: null,
  review: true,
  creators: [],
  creator: null,
  view: 'fans',
  fans: [],
  pending: [],
  openFan: null, // fan id of the open conversation
  convGen: 0, // bumped when the open conversation changes, so late answers are dropped
  historyKey: '', // what the history list shows, to redraw it only when it changed
  profileDirty: false,
  pollTimer: null,
  tryTimer: null,
  refreshing: null,
  refreshQueued: null,
};

// ---------------------------------------------------------------------------------------------
// DOM and formatting helpers

const $ = (id) => document.getElementById(id);

/** A new element: props `class`, `text`, `testid`, else attributes; children are nodes or text. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'testid') node.dataset.testid = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children.filter((c) => c != null && c !== false));
  return node;
}

function setText(id, text) {
  $(id).textContent = text || '';
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function score(x) {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(2) : '—';
}

/** "just now", "3 min ago", "2 h ago", "4 d ago". */
function timeAgo(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const s = Math.max(0, Math.floor((Date.now() - t) / 1000));
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** "45 s", "12 min", "3 h 5 min", "2 d 4 h". */
function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A <time> saying how long ago, with the full date as its tooltip. */
function agoEl(iso, props = {}) {
  if (!iso) return null;
  return el('time', { datetime: iso, title: new Date(iso).toLocaleString(), text: timeAgo(iso), ...props });
}

/** A <time> with the local clock time (and the date when not today). */
function clockEl(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  const today = d.toDateString() === new Date().toDateString();
  const text = today
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  return el('time', { datetime: iso, title: d.toLocaleString(), text });
}

function badge(text, kind, title) {
  return el('span', { class: `badge badge-${kind}`, testid: `marker-${kind}`, title, text });
}

/** The handoff / returning / pending-drafts markers of a fan. */
function fanMarkers(fan) {
  const box = el('span', { class: 'markers' });
  if (!fan) return box;
  const handoffs = fan.handoffs || [];
  if (handoffs.length) {
    const why = handoffs.map((h) => `${h.category}: ${h.reason}`).join('\n');
    box.append(badge('handoff', 'handoff', why));
  }
  if (fan.returning) box.append(badge('returning', 'returning', 'back after a long silence'));
  if (fan.pending_drafts > 0) box.append(badge(plural(fan.pending_drafts, 'draft'), 'drafts'));
  return box;
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, type, message, detail) {
    super(message);
    this.status = status;
    this.type = type;
    this.detail = detail || {};
  }
}

/**
 * Calls the JSON API with the token; resolves to `{status, data}` on 2xx. Throws an ApiError
 * carrying the server's `error` object otherwise; a 401 also ends the session (back to login).
 */
async function api(method, path, { query, body } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value != null && value !== '') url.searchParams.set(key, value);
  }
  const headers = { Accept: 'application/json', Authorization: `Bearer ${state.token}` };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, 'network_error', `The server did not answer (${err.message}).`);
  }
  const data = await response.json().catch(() => null);
  if (response.ok) return { status: response.status, data };
  const error = (data && data.error) || {};
  const message = error.message || `HTTP ${response.status} ${response.statusText}`.trim();
  const failure = new ApiError(response.status, error.type || 'http_error', message, error);
  if (response.status === 401) endSession(`The server refused the token (401): ${message}`);
  throw failure;
}

/** Shows an error that belongs to no form; a 401 has already ended the session. */
function report(err) {
  if (err instanceof ApiError && err.status === 401) return;
  if (!(err instanceof ApiError)) console.error(err); // a bug of this page: let it show
  setText('global-alert', err instanceof ApiError ? `${err.message} (${err.status || 'no answer'})` : String(err));
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------------
// Session: log in, log out

async function logIn(token) {
  state.token = token;
  const { data } = await api('GET', '/v1/console');
  sessionStorage.setItem(TOKEN_KEY, token);
  state.review = data.review !== false;
  state.creators = Array.isArray(data.creators) ? data.creators : [];
  if (!state.creators.includes(state.creator)) state.creator = state.creators[0] ?? null;
  renderSession();
  $('login').hidden = true;
  $('app').hidden = false;
  $('session').hidden = false;
  await refresh();
  schedulePoll();
}

/** Forgets the token and every loaded fan, and shows the login form with `message`. */
function endSession(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.pollTimer);
  Object.assign(state, { token: null, fans: [], pending: [], openFan: null, convGen: state.convGen + 1 });
  $('app').hidden = true;
  $('session').hidden = true;
  $('login').hidden = false;
  setText('login-error', message);
  setText('global-alert', '');
  $('fan-list').replaceChildren();
  $('pending-list').replaceChildren();
  closeConversation();
  $('token-input').focus();
}

async function onLoginSubmit(event) {
  event.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) return;
  setText('login-error', '');
  $('login-button').disabled = true;
  try {
    await logIn(token);
    $('token-input').value = '';
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      state.token = null;
      setText('login-error', `Could not log in: ${err.message}`);
    }
  } finally {
    $('login-button').disabled = false;
  }
}

function renderSession() {
  const select = $('creator-select');
  select.replaceChildren(...state.creators.map((c) => el('option', { value: c, text: c })));
  select.value = state.creator ?? '';
  $('creator-picker').hidden = state.creators.length < 2;
  setText('creator-name', state.creators.length === 1 ? state.creator : '');
  $('mode-note').hidden = state.review;
}

function onCreatorChange() {
  state.creator = $('creator-select').value;
  state.fans = [];
  state.pending = [];
  closeConversation();
  refresh();
}

// ---------------------------------------------------------------------------------------------
// Refreshing: on a timer and after every action

function schedulePoll() {
  clearTimeout(state.pollTimer);
  if (state.token) state.pollTimer = setTimeout(poll, POLL_MS);
}

async function poll() {
  if (!document.hidden) await refresh();
  schedulePoll();
}

/** Reloads the lists and the open conversation; a call during a reload runs once after it. */
function refresh() {
  if (state.refreshing) {
    state.refreshQueued ||= state.refreshing.then(() => {
      state.refreshQueued = null;
      return refresh();
    });
    return state.refreshQueued;
  }
  state.refreshing = reloadAll().finally(() => {
    state.refreshing = null;
  });
  return state.refreshing;
}

async function reloadAll() {
  if (!state.token) return;
  try {
    await Promise.all([loadFans(), loadPending(), loadConversation()]);
    setText('global-alert', '');
  } catch (err) {
    report(err);
  }
}

// ---------------------------------------------------------------------------------------------
// Views in the sidebar

function showView(name) {
  state.view = name;
  for (const tab of document.querySelectorAll('.tab')) {
    if (tab.dataset.view === name) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  $('view-fans').hidden = name !== 'fans';
  $('view-drafts').hidden = name !== 'drafts';
  $('view-try').hidden = name !== 'try';
  if (name === 'try') $('try-message').focus();
}

/** Replaces a list's rows, keeping the keyboard focus on the row with the same key. */
function replaceRows(list, rows, keyName) {
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset[keyName] : null;
  list.replaceChildren(...rows);
  if (focused == null) return;
  const again = [...list.querySelectorAll('button')].find((b) => b.dataset[keyName] === focused);
  if (again) again.focus();
}

// Fans

async function loadFans() {
  const creator = state.creator;
  const { data } = await api('GET', '/v1/fans', { query: { creator } });
  if (creator !== state.creator) return;
  state.fans = data.data || [];
  renderFans();
  renderConversationHead();
}

function fanMatches(fan, query) {
  if (!query) return true;
  return fan.id.toLowerCase().includes(query) || (fan.last_message || '').toLowerCase().includes(query);
}

function renderFans() {
  const query = $('fan-search').value.trim().toLowerCase();
  const shown = state.fans.filter((fan) => fanMatches(fan, query));
  replaceRows($('fan-list'), shown.map(fanRow), 'fanId');
  let empty = '';
  if (!state.fans.length) empty = 'No fans yet. Use “Try it” to write as one.';
  else if (!shown.length) empty = 'No fan matches the search.';
  setText('fan-empty', empty);
}

function fanRow(fan) {
  const row = el(
    'button',
    {
      type: 'button',
      class: 'row',
      testid: 'fan-row',
      'data-fan-id': fan.id,
      'aria-current': fan.id === state.openFan ? 'true' : null,
    },
    el('span', { class: 'row-top' }, el('span', { class: 'row-title', text: fan.id }), agoEl(fan.last_at)),
    el('span', { class: 'row-text', testid: 'fan-last-message', text: fan.last_message ?? 'no messages yet' }),
    fanMarkers(fan),
  );
  row.addEventListener('click', () => openConversation(fan.id));
  return el('li', {}, row);
}

// Pending drafts

async function loadPending() {
  const creator = state.creator;
  const { data } = await api('GET', '/v1/drafts', { query: { creator } });
  if (creator !== state.creator) return;
  state.pending = data.data || [];
  renderPending();
}

function renderPending() {
  setText('pending-count', String(state.pending.length));
  replaceRows($('pending-list'), state.pending.map(pendingRow), 'draftId');
  setText('pending-empty', state.pending.length ? '' : 'No draft is waiting for review.');
}

function pendingRow(draft) {
  const row = el(
    'button',
    {
      type: 'button',
      class: 'row',
      testid: 'pending-row',
      'data-draft-id': draft.draft_id,
      'data-fan-id': draft.fan_id,
      'aria-current': draft.fan_id === state.openFan ? 'true' : null,
    },
    el('span', { class: 'row-top' }, el('span', { class: 'row-title', text: draft.fan_id }), agoEl(draft.created_at)),
    el('span', { class: 'row-text row-fan', text: draft.fan_message }),
    el('span', { class: 'row-text row-draft', text: `↳ ${draft.draft}` }),
  );
  row.addEventListener('click', () => openConversation(draft.fan_id));
  return el('li', {}, row);
}

// ---------------------------------------------------------------------------------------------
// The open conversation

function openConversation(fanId, { focus = true } = {}) {
  if (fanId !== state.openFan) {
    state.openFan = fanId;
    state.convGen += 1;
    state.historyKey = '';
    state.profileDirty = false;
    $('history').replaceChildren();
    $('drafts').replaceChildren();
    $('profile-text').value = '';
    for (const id of ['history-empty', 'drafts-empty', 'draft-alert', 'draft-status', 'profile-status', 'profile-error']) {
      setText(id, '');
    }
  }
  $('conv-placeholder').hidden = true;
  $('conv').hidden = false;
  renderConversationHead();
  renderFans();
  renderPending();
  if (focus) $('conv-title').focus();
  loadConversation().catch(report);
}

function closeConversation() {
  state.openFan = null;
  state.convGen += 1;
  $('conv').hidden = true;
  $('conv-placeholder').hidden = false;
  $('drafts').replaceChildren();
  $('history').replaceChildren();
}

async function loadConversation() {
  const fanId = state.openFan;
  if (fanId == null) return;
  const gen = state.convGen;
  const creator = state.creator;
  const path = `/v1/fans/${enc(fanId)}/messages`;
  const [conv, drafts] = await Promise.all([
    api('GET', path, { query: { creator } }).then(
      (r) => r.data,
      (err) => {
        if (err.status === 404) return null; // no message stored yet
        throw err;
      },
    ),
    api('GET', '/v1/drafts', { query: { creator, fan_id: fanId } }).then((r) => r.data.data || []),
  ]);
  if (gen !== state.convGen) return;
  renderHistory(conv ? conv.messages || [] : []);
  renderProfile(conv ? conv.profile : null, conv != null);
  renderDrafts(drafts);
}

function renderConversationHead() {
  if (state.openFan == null) return;
  const fan = state.fans.find((f) => f.id === state.openFan);
  setText('conv-title', state.openFan);
  $('conv-markers').replaceChildren(...fanMarkers(fan).childNodes);
  const handoffs = (fan && fan.handoffs) || [];
  $('conv-handoffs').replaceChildren(...handoffs.map(handoffItem));
}

function handoffItem(h) {
  const opened = h.opened_at ? ` (since ${new Date(h.opened_at).toLocaleString()})` : '';
  return el(
    'li',
    { class: 'handoff', testid: 'handoff' },
    el('strong', { text: `Handed to a human: ${h.category}` }),
    ` — ${h.reason}${h.stop ? ' — the fan asked to stop' : ''}${opened}`,
  );
}

// History

function renderHistory(messages) {
  const key = JSON.stringify(messages.map((m) => [m.from_creator, m.content, m.sent_at]));
  if (key === state.historyKey) return;
  const first = state.historyKey === '';
  state.historyKey = key;
  const list = $('history');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...messages.map(historyItem));
  setText('history-empty', messages.length ? '' : 'No message stored for this fan yet.');
  if (first || atBottom) list.scrollTop = list.scrollHeight;
}

function historyItem(message) {
  const who = message.from_creator ? 'creator' : 'fan';
  const name = message.from_creator ? state.creator || 'creator' : state.openFan;
  return el(
    'li',
    { class: `msg msg-${who}`, testid: 'history-message', 'data-from': who },
    el('span', { class: 'msg-meta' }, el('span', { class: 'msg-who', text: name }), ' ', clockEl(message.sent_at)),
    el('span', { class: 'msg-text', testid: 'history-text', text: message.content }),
  );
}

// Profile

function renderProfile(profile, known) {
  const area = $('profile-text');
  $('profile-save').disabled = !known;
  area.disabled = !known;
  if (!known) {
    area.value = '';
    return;
  }
  if (state.profileDirty || document.activeElement === area) return;
  area.value = JSON.stringify(profile ?? {}, null, 2);
}

/** The profile textarea as an object, or throws an Error saying what is wrong. */
function parseProfile(text) {
  let profile;
  try {
    profile = JSON.parse(text.trim() || '{}');
  } catch (err) {
    throw new Error(`The profile is not valid JSON: ${err.message}`);
  }
  if (profile === null || typeof profile !== 'object' || Array.isArray(profile)) {
    throw new Error('The profile must be a JSON object, e.g. {"name": "Sam", "notes": ["likes hiking"]}.');
  }
  return profile;
}

async function onProfileSubmit(event) {
  event.preventDefault();
  setText('profile-status', '');
  setText('profile-error', '');
  const fanId = state.openFan;
  let profile;
  try {
    profile = parseProfile($('profile-text').value);
  } catch (err) {
    setText('profile-error', err.message);
    return;
  }
  $('profile-save').disabled = true;
  try {
    const { data } = await api('PUT', `/v1/fans/${enc(fanId)}/profile`, {
      query: { creator: state.creator },
      body: profile,
    });
    if (fanId !== state.openFan) return;
    state.profileDirty = false;
    $('profile-text').value = JSON.stringify(data.profile ?? profile, null, 2);
    setText('profile-status', 'Saved.');
  } catch (err) {
    if (err.status !== 401) setText('profile-error', `Not saved (${err.status || 'no answer'}): ${err.message}`);
  } finally {
    $('profile-save').disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Drafts of the open conversation: one card each, kept while the draft is pending

function renderDrafts(drafts) {
  const box = $('drafts');
  const cards = new Map([...box.children].map((card) => [card.dataset.draftId, card]));
  const pending = new Set(drafts.map((d) => d.draft_id));
  let lostFocus = false;
  for (const [id, card] of cards) {
    if (pending.has(id)) continue;
    lostFocus ||= card.contains(document.activeElement);
    card.remove();
  }
  for (const draft of drafts) {
    const card = cards.get(draft.draft_id);
    if (card) updateAge(card, draft);
    else box.append(draftCard(draft));
  }
  setText('drafts-empty', drafts.length ? '' : 'No draft is waiting for this fan.');
  if (lostFocus) $('drafts-title').focus();
}

function updateAge(card, draft) {
  const time = card.querySelector('.draft-age');
  time.dateTime = draft.created_at || '';
  time.textContent = timeAgo(draft.created_at);
  time.title = draft.created_at ? new Date(draft.created_at).toLocaleString() : '';
}

function draftCard(draft) {
  const card = $('draft-template').content.firstElementChild.cloneNode(true);
  card.dataset.draftId = draft.draft_id;
  updateAge(card, draft);
  card.querySelector('.draft-fan-message').textContent = draft.fan_message;
  card.querySelector('.draft-text').textContent = draft.draft;
  fillWhy(card, draft);
  wireDraftActions(card, draft);
  return card;
}

function fillWhy(card, draft) {
  const answer = draft.answer || {};
  const part = (cls) => card.querySelector(cls);
  part('.style-score').textContent = `Style score: ${score(answer.style)} (how close the draft is to the creator's voice)`;
  const demos = answer.demos || [];
  part('.demos').replaceChildren(...(demos.length ? demos.map(demoItem) : [el('li', { text: 'none' })]));
  part('.verdicts').replaceChildren(...verdictItems(answer.filter));
  fillContext(part('.facts'), part('.notes'), answer.context || {});
  const candidates = answer.candidates || [];
  part('.candidates-box').hidden = candidates.length === 0;
  part('.candidates').replaceChildren(...candidates.map((c) => candidateItem(c, draft.draft)));
  if (answer.handoff) {
    const h = answer.handoff;
    part('.draft-handoff').hidden = false;
    part('.draft-handoff').textContent = `This turn handed the fan to a human: ${h.category} — ${h.reason}`;
  }
}

function demoItem(demo) {
  return el(
    'li',
    { class: 'demo', testid: 'demo' },
    el(
      'p',
      { class: 'demo-head' },
      el('span', { class: 'demo-score', testid: 'demo-score', text: `score ${score(demo.score)}` }),
      el('span', { class: 'demo-id', text: `example #${demo.id}` }),
    ),
    el('p', { class: 'demo-reply', testid: 'demo-reply', text: demo.reply }),
    el(
      'details',
      { class: 'demo-conversation' },
      el('summary', { text: 'conversation it answered' }),
      el('p', { class: 'pre', testid: 'demo-conversation', text: demo.conversation }),
    ),
  );
}

function verdictItems(filter) {
  if (!filter) return [el('li', { class: 'verdict-summary', text: 'No filter report.' })];
  const items = [];
  if (filter.input) items.push(verdictItem('fan message', filter.input));
  (filter.output || []).forEach((v, i) => items.push(verdictItem(`draft attempt ${i + 1}`, v)));
  const fallback = filter.fallback ? 'yes: every attempt was blocked, this is the safe fallback reply' : 'no';
  items.push(
    el('li', {
      class: 'verdict-summary',
      testid: 'verdict-summary',
      text: `${plural(filter.attempts ?? 0, 'attempt')}; fallback: ${fallback}`,
    }),
  );
  return items;
}

function verdictItem(label, verdict) {
  const outcome = verdict.blocked ? 'blocked' : 'passed';
  return el(
    'li',
    { class: `verdict verdict-${outcome}`, testid: 'verdict', 'data-blocked': String(Boolean(verdict.blocked)) },
    el('span', { class: 'verdict-label', text: label }),
    el('span', { class: 'verdict-outcome', text: outcome }),
    verdict.category ? el('span', { class: 'verdict-category', text: verdict.category }) : null,
    verdict.stage ? el('span', { class: 'verdict-stage', text: `stage: ${verdict.stage}` }) : null,
    verdict.reason ? el('span', { class: 'verdict-reason', text: verdict.reason }) : null,
  );
}

/** A context fact as [label, text]: `session_seconds: 620` reads "session: 10 min". */
function fact(key, value) {
  const seconds = key.endsWith('_seconds');
  const label = (seconds ? key.slice(0, -'_seconds'.length) : key).replaceAll('_', ' ');
  if (value == null) return [label, '—'];
  if (seconds && typeof value === 'number') return [label, duration(value)];
  return [label, typeof value === 'object' ? JSON.stringify(value) : String(value)];
}

function fillContext(list, notesList, context) {
  const facts = Object.entries(context).filter(([key]) => key !== 'notes');
  list.replaceChildren(
    ...facts.flatMap(([key, value]) => {
      const [label, text] = fact(key, value);
      return [el('dt', { text: label }), el('dd', { text })];
    }),
  );
  const notes = Array.isArray(context.notes) ? context.notes : [];
  notesList.replaceChildren(...notes.map((note) => el('li', { text: note })));
}

function candidateItem(candidate, chosen) {
  const picked = candidate.reply === chosen;
  return el(
    'li',
    { class: `candidate${picked ? ' candidate-picked' : ''}`, testid: 'candidate' },
    el(
      'span',
      { class: 'candidate-head' },
      `style ${score(candidate.style)}`,
      picked ? badge('chosen', 'chosen') : null,
      candidate.fallback ? badge('fallback', 'fallback') : null,
    ),
    el('span', { class: 'candidate-reply', text: candidate.reply }),
  );
}

// Draft actions

const ACTIONS = {
  approve: { busy: 'Sending…', done: 'Approved: the reply was sent to the fan.', name: 'Approve' },
  reject: { busy: 'Rejecting…', done: 'Rejected.', name: 'Reject' },
  regenerate: {
    busy: 'Writing a new draft, this can take up to a minute…',
    done: 'Regenerated: the new draft is below.',
    name: 'Regenerate',
  },
};

function wireDraftActions(card, draft) {
  const form = card.querySelector('.edit-form');
  const area = card.querySelector('.edit-text');
  card.querySelector('.act-approve').addEventListener('click', () => decide(card, draft, 'approve', {}));
  card.querySelector('.act-regenerate').addEventListener('click', () => decide(card, draft, 'regenerate', {}));
  card.querySelector('.act-reject').addEventListener('click', () => decide(card, draft, 'reject', {}));
  card.querySelector('.act-edit').addEventListener('click', () => toggleEdit(card, draft, true));
  card.querySelector('.act-cancel').addEventListener('click', () => toggleEdit(card, draft, false));
  area.addEventListener('keydown', submitOnEnter);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    decide(card, draft, 'approve', { text: area.value });
  });
}

function toggleEdit(card, draft, open) {
  const form = card.querySelector('.edit-form');
  const area = card.querySelector('.edit-text');
  if (open && form.hidden) area.value = draft.draft;
  form.hidden = !open;
  card.querySelector('.act-edit').setAttribute('aria-expanded', String(open));
  if (open) area.focus();
  else card.querySelector('.act-edit').focus();
}

function setCardBusy(card, action) {
  for (const button of card.querySelectorAll('button')) button.disabled = Boolean(action);
  card.querySelector('.edit-text').readOnly = Boolean(action);
  card.setAttribute('aria-busy', String(Boolean(action)));
  card.querySelector('.draft-busy').hidden = !action;
  card.querySelector('.draft-busy-text').textContent = action ? ACTIONS[action].busy : '';
}

/** Approves (with `{text}` when edited), rejects or regenerates a draft, then reloads. */
async function decide(card, draft, action, body) {
  const focused = document.activeElement;
  setText('draft-alert', '');
  setText('draft-status', '');
  setCardBusy(card, action);
  try {
    await api('POST', `/v1/drafts/${enc(draft.draft_id)}/${action}`, { body });
    setText('draft-status', ACTIONS[action].done);
  } catch (err) {
    showRefusal(action, err);
  } finally {
    setCardBusy(card, null);
  }
  await refresh();
  restoreFocus(card, focused);
}

/** Disabled buttons drop the focus: give it back, or to the drafts heading if the card is gone. */
function restoreFocus(card, focused) {
  const lost = !document.activeElement || document.activeElement === document.body;
  if (!lost || state.openFan == null) return;
  if (card.isConnected && card.contains(focused)) focused.focus();
  else $('drafts-title').focus();
}

/** Puts the server's refusal in the alert: its message, and for 422 the verdict's category and reason. */
function showRefusal(action, err) {
  if (err instanceof ApiError && err.status === 401) return;
  const status = err.status ? `${err.status} ${err.type}` : 'no answer';
  const parts = [
    el('strong', { text: `${ACTIONS[action].name} refused` }),
    ` (${status}): `,
    el('span', { testid: 'alert-message', text: err.message }),
  ];
  const verdict = err.detail && err.detail.verdict;
  if (err.status === 422 && verdict) {
    parts.push(
      el(
        'span',
        { class: 'alert-verdict' },
        'Category: ',
        el('strong', { testid: 'alert-category', text: verdict.category || 'none' }),
        ' — reason: ',
        el('span', { testid: 'alert-reason', text: verdict.reason || '' }),
      ),
    );
  }
  if (err.status === 409) parts.push(el('span', { class: 'alert-verdict', text: 'The list below is up to date again.' }));
  $('draft-alert').replaceChildren(...parts);
}

// ---------------------------------------------------------------------------------------------
// Try it: write as a fan

/** Enter submits the textarea's form; Shift+Enter adds a line. */
function submitOnEnter(event) {
  if (event.key !== 'Enter' || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  event.target.form.requestSubmit();
}

function setTryBusy(busy) {
  $('try-send').disabled = busy;
  $('try-busy').hidden = !busy;
  clearInterval(state.tryTimer);
  if (!busy) return;
  const started = Date.now();
  const tick = () => setText('try-elapsed', `${Math.round((Date.now() - started) / 1000)} s`);
  tick();
  state.tryTimer = setInterval(tick, 1000);
}

async function onTrySubmit(event) {
  event.preventDefault();
  const fanId = $('try-fan').value.trim();
  const message = $('try-message').value.trim();
  if (!fanId || !message) return;
  setText('try-result', '');
  setText('try-error', '');
  setTryBusy(true);
  try {
    const { status, data } = await api('POST', '/v1/reply', {
      body: { fan_id: fanId, message, creator: state.creator ?? undefined },
    });
    $('try-message').value = '';
    setText(
      'try-result',
      status === 202
        ? `Draft ready: it waits for review in ${fanId}'s conversation.`
        : `Sent without review: “${data.reply}”`,
    );
    openConversation(fanId, { focus: false });
  } catch (err) {
    if (err.status !== 401) setText('try-error', `Not sent (${err.status || 'no answer'}): ${err.message}`);
  } finally {
    setTryBusy(false);
  }
  await refresh();
}

// ---------------------------------------------------------------------------------------------
// Start

function wire() {
  $('login-form').addEventListener('submit', onLoginSubmit);
  $('logout').addEventListener('click', () => endSession(''));
  $('creator-select').addEventListener('change', onCreatorChange);
  for (const tab of document.querySelectorAll('.tab')) {
    tab.addEventListener('click', () => showView(tab.dataset.view));
  }
  $('fan-search').addEventListener('input', renderFans);
  $('try-form').addEventListener('submit', onTrySubmit);
  $('try-message').addEventListener('keydown', submitOnEnter);
  $('profile-form').addEventListener('submit', onProfileSubmit);
  $('profile-text').addEventListener('input', () => {
    state.profileDirty = true;
    setText('profile-status', 'Not saved yet.');
  });
  $('profile-text').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $('profile-form').requestSubmit();
    }
  });
  $('conv-refresh').addEventListener('click', () => refresh());
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.token) refresh();
  });
}

function start() {
  wire();
  showView('fans');
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (!saved) {
    $('token-input').focus();
    return;
  }
  logIn(saved).catch((err) => {
    if (!(err instanceof ApiError && err.status === 401)) endSession(`Could not log in: ${err.message}`);
  });
}

start();
