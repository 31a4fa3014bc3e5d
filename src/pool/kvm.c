/* thunder — does KVM really run a guest here?
 *
 * Some hosts expose a /dev/kvm that runs trivial code but not a real guest:
 * nested or para-virtualised KVM (e.g. PVM, "kvm_pvm") stops a normal
 * kernel's boot with an emulation failure at the first protected-mode IRET
 * (syslinux's), and the domain then sits paused for ever; others hang in
 * KVM_RUN.  "auto" must only pick KVM when a vCPU has really run, so the
 * probe goes a little past HLT.  It runs in a child process, so a hung
 * ioctl costs a SIGKILL, not the caller's thread:
 *
 *   child:  open /dev/kvm, KVM_GET_API_VERSION (12), KVM_CREATE_VM, one
 *           page of guest memory at 0x1000, KVM_CREATE_VCPU, CS base 0 /
 *           selector 0 (real mode), then two runs:
 *             1. RIP at a HLT (0xf4): KVM_RUN must exit with KVM_EXIT_HLT;
 *             2. RIP at probe_code: load a flat GDT, set CR0.PE, far jump
 *                to 32-bit code, load data segments and a stack, IRET to
 *                a HLT: KVM_RUN must exit with KVM_EXIT_HLT there;
 *           writes 'y' to a pipe if both did, else 'n'.
 *   parent: waits for that byte at most PROBE_TIMEOUT_MS, then SIGKILLs
 *           the child and reaps it (giving up after a further second if
 *           the kernel holds it: it is then reaped by nobody until it
 *           dies, which costs one zombie, never a hang).
 *
 * The same code, copied to 0x1000 by a 64 KiB -bios whose reset vector
 * jumps there, reaches the final HLT under QEMU TCG (checked by hand with
 * isa-debug-exit in place of that HLT).  The child only makes system calls
 * after fork, so it is safe to call from a threaded program.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

#define PROBE_TIMEOUT_MS 2000
#define GUEST_ADDR 0x1000
#define HLT_OFFSET 0x80 /* run 1: a lone HLT */

/* Run 2, loaded at GUEST_ADDR (offsets are guest addresses - 0x1000):
 *   0x00  .code16  cli; lgdtl 0x1120; mov %cr0,%eax; or $1,%al;
 *                  mov %eax,%cr0; ljmp $0x08,$0x1014
 *   0x14  .code32  mov $0x10,%ax; mov %ax,%ds; mov %ax,%ss; mov %ax,%es;
 *                  mov $0x1800,%esp; pushfl; push $0x08; push $0x102c; iretl
 *   0x2c           hlt
 *   0x100 GDT: null, code 0x00cf9a000000ffff, data 0x00cf92000000ffff
 *   0x120 GDT descriptor: limit 23, base 0x1100 */
static const uint8_t probe_code[] = {
  0xfa, 0x66, 0x0f, 0x01, 0x16, 0x20, 0x11, 0x0f, 0x20, 0xc0, 0x0c, 0x01,
  0x0f, 0x22, 0xc0, 0xea, 0x14, 0x10, 0x08, 0x00, 0x66, 0xb8, 0x10, 0x00,
  0x8e, 0xd8, 0x8e, 0xd0, 0x8e, 0xc0, 0xbc, 0x00, 0x18, 0x00, 0x00, 0x9c,
  0x6a, 0x08, 0x68, 0x2c, 0x10, 0x00, 0x00, 0xcf, 0xf4,
};
static const uint8_t probe_gdt[] = {
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00,
  0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00,
};
static const uint8_t probe_gdt_desc[] = { 0x17, 0x00, 0x00, 0x11, 0x00, 0x00 };

/* Runs the vCPU from rip until it exits: true if the exit is HLT. */
static bool
run_to_hlt(int vcpu, struct kvm_run *run, uint64_t rip)
{
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = rip;
  regs.rflags = 0x2;
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
    return false;
  for (int i = 0; i < 10; i++) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return false;
    }
    if (run->exit_reason == KVM_EXIT_INTR)
      continue;
    return run->exit_reason == KVM_EXIT_HLT;
  }
  return false;
}

/* In the child: true if a vCPU runs HLT and exits. */
static bool
probe(void)
{
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0 || ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
    return false;
  int vm = ioctl(kvm, KVM_CREATE_VM, 0UL);
  if (vm < 0)
    return false;
  /* Intel without unrestricted guest needs a TSS for real mode; ignored
   * where it does not apply. */
  ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL);

  uint8_t *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED)
    return false;
  memcpy(mem, probe_code, sizeof probe_code);
  mem[HLT_OFFSET] = 0xf4; /* hlt */
  memcpy(mem + 0x100, probe_gdt, sizeof probe_gdt);
  memcpy(mem + 0x120, probe_gdt_desc, sizeof probe_gdt_desc);
  struct kvm_userspace_memory_region region = {
    .slot = 0,
    .guest_phys_addr = GUEST_ADDR,
    .memory_size = 0x1000,
    .userspace_addr = (uintptr_t)mem,
  };
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
    return false;
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0UL);
  if (vcpu < 0)
    return false;
  int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (size < (int)sizeof(struct kvm_run))
    return false;
  struct kvm_run *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE,
                             MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED)
    return false;

  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
    return false;
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
    return false;
  return run_to_hlt(vcpu, run, GUEST_ADDR + HLT_OFFSET) &&
         run_to_hlt(vcpu, run, GUEST_ADDR);
}

static int64_t
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool
pool_kvm_usable(void)
{
  if (access("/dev/kvm", R_OK | W_OK) < 0)
    return false;
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) < 0)
    return false;
  pid_t pid = fork();
  if (pid < 0) {
    close(pfd[0]);
    close(pfd[1]);
    return false;
  }
  if (pid == 0) {
    close(pfd[0]);
    char c = probe() ? 'y' : 'n';
    ssize_t w = write(pfd[1], &c, 1);
    _exit(w == 1 ? 0 : 1);
  }
  close(pfd[1]);

  char c = 'n';
  int64_t deadline = now_ms() + PROBE_TIMEOUT_MS;
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0)
      break;
    struct pollfd pf = { .fd = pfd[0], .events = POLLIN };
    int r = poll(&pf, 1, (int)left);
    if (r < 0 && errno == EINTR)
      continue;
    if (r > 0) {
      ssize_t n;
      do
        n = read(pfd[0], &c, 1);
      while (n < 0 && errno == EINTR);
      if (n != 1)
        c = 'n';
    }
    break;
  }
  close(pfd[0]);

  /* Reap the child; kill it first unless it has exited. */
  int status;
  pid_t w;
  do
    w = waitpid(pid, &status, WNOHANG);
  while (w < 0 && errno == EINTR);
  if (w == 0) {
    kill(pid, SIGKILL);
    int64_t give_up = now_ms() + 1000;
    while (now_ms() < give_up) {
      w = waitpid(pid, &status, WNOHANG);
      if (w != 0 && !(w < 0 && errno == EINTR))
        break;
      struct timespec ts = { 0, 10 * 1000 * 1000 };
      nanosleep(&ts, NULL);
    }
  }
  return c == 'y';
}
