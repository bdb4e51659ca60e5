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

#endif
