/*
 * Kernel UAPI newer than liburing 2.3 (Debian 12). Each name is defined once,
 * here, and only when the installed headers lack it.
 */
#ifndef SHEAF_COMPAT_H
#define SHEAF_COMPAT_H

#include <liburing.h>

#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4) /* Linux 6.10 */
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14) /* Linux 6.10 */
#endif
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2 /* Linux 6.12; goes in io_uring_buf_reg.pad in 2.3 */
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

/*
 * IORING_REGISTER_NAPI (Linux 6.9) is an enum constant in newer headers, so
 * it cannot be tested with #ifndef: sheaf's own names, with the kernel's
 * values and layout (struct io_uring_napi).
 */
#define SHEAF__REGISTER_NAPI 27
struct sheaf__napi_reg {
	__u32 busy_poll_to;     /* microseconds */
	__u8 prefer_busy_poll;
	__u8 pad[3];
	__u64 resv;
};

#endif
