/* Kernel trials the probe runs where no feature bit tells. Not installed. */
#ifndef SHEAF_TRIAL_H
#define SHEAF_TRIAL_H

struct io_uring;

/*
 * Does a bundle send commit every ring entry it selects, sent or not?
 * Forces a short bundle send on a private socketpair (buffer group 3) and
 * checks that a second send finds the ring empty (-ENOBUFS, no F_BUFFER),
 * then re-publishes the unsent rest and checks the peer got the original
 * bytes in order. The send ring code relies on this rule to know which
 * entries to re-publish after a short send.
 *
 * Needs a ring with nothing else in flight (every CQE seen is consumed) and
 * buffer group 3 free; leaves both as it found them.
 * Returns 1 if the kernel follows the rule, 0 if it does not (send bundles
 * must not be used), or a negative errno if the trial could not run.
 */
int sheaf__trial_send_commit(struct io_uring *ring);

#endif
