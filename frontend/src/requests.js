// Was my request applied? The tab's copy of the one rule of
// tb_retune/experiment/requests.py (request_state), pure: the writer stamps
// retune.json with a revision id, the POST reply names it, and the trainer
// records the revision it took in the status' `control`. Test cases:
// frontend/test/fixtures/request_cases.json, held against the Python rule by
// tests/test_request_cases.py.

export const PENDING = 'pending';
export const APPLIED = 'applied';
export const REJECTED = 'rejected';
export const UNCHANGED = 'unchanged';
export const NO_TRAINER = 'no_trainer';
const RESULTS = [APPLIED, REJECTED, UNCHANGED];

/** The status' `control` record when it is one, else null. */
export function controlRecord(status) {
  const record = status && typeof status === 'object' ? status.control : null;
  if (!record || typeof record !== 'object' || Array.isArray(record) || !RESULTS.includes(record.result)) return null;
  return record;
}

/**
 * Whether no trainer lives: no status or a state other than `training`. (The
 * Python rule also checks the trainer's pid on its machine; a browser
 * cannot, so the status route's own answer, `requests`, is used when the
 * server gives one.)
 */
export function trainerGone(status) {
  return !status || typeof status !== 'object' || status.state !== 'training';
}

/**
 * The state of the write stamped `revisionId`: `applied`, `rejected` or
 * `unchanged` once the trainer took it (or a later revision that carries
 * it), `no_trainer` when no trainer lives to take it, else `pending`.
 *
 * @param {object|null} status the decoded retune-status.json (the status or tree route's `status`)
 * @param {string} revisionId
 * @param {{later?: string[]}} [options] revisions written after this one (they carry it: the writer merges)
 */
export function requestState(status, revisionId, { later = [] } = {}) {
  const record = controlRecord(status);
  if (record && (record.revision === revisionId || later.includes(record.revision))) return record.result;
  if (trainerGone(status)) return NO_TRAINER;
  return PENDING;
}
