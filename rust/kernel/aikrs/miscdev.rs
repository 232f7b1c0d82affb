// SPDX-License-Identifier: GPL-2.0

//! Misc character devices with `ioctl` and PFN-map `mmap`, as GPU drivers hand out buffer
//! objects (C `<linux/miscdevice.h>`, `vmf_insert_pfn`).
//!
//! Linux 6.12's `kernel` crate has no misc device abstraction, and 7.x's differs, so this
//! one works the same on both. A driver implements [`FileOps`] for its per-open-file state
//! and registers it with [`Registration::register`]:
//!
//! - `open` creates the file's state (boxed, stored in `file->private_data`), `release`
//!   (the `Drop` of that state) frees it;
//! - `ioctl` gets the raw command and argument (see [`crate::uaccess::UserSlice`]);
//! - `mmap` sees the new mapping ([`VmaNew`]) and may turn it into a PFN map served by
//!   `fault`, which maps one page per call through [`Fault::insert_pfn`].
//!
//! The file operations carry the registering module as owner, so a module is not
//! unloaded while one of its files is open (and thus while a mapping still uses its
//! `vm_operations_struct`: a mapping holds its file).

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{code::*, Error, Result},
    ThisModule,
};
use core::{
    ffi::{c_int, c_uint, CStr},
    marker::PhantomData,
    pin::Pin,
    ptr::NonNull,
};

/// The per-open-file state of a misc device.
pub trait FileOps: Sized + Send + Sync + 'static {
    /// Device-wide data, shared by every open file.
    type Device: Send + Sync + 'static;

    /// Creates the state of a newly opened file (pinned: it may hold locks).
    fn open(dev: &'static Self::Device, file: &OpenFile) -> Result<Pin<KBox<Self>>>;

    /// Handles `ioctl(cmd, arg)`; the value is returned to user space.
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize>;

    /// Sets up a new mapping of the file; the default refuses (`ENODEV`).
    fn mmap(&self, _vma: &VmaNew<'_, Self>) -> Result {
        Err(ENODEV)
    }

    /// Serves a fault on a PFN map set up by [`VmaNew::setup_pfnmap`]: maps the page of
    /// file offset `fault.pgoff()` with [`Fault::insert_pfn`]. An error becomes `SIGBUS`
    /// (`ENOMEM`: the OOM path).
    fn fault(&self, _fault: &mut Fault<'_>) -> Result {
        Err(EFAULT)
    }
}

/// An open file, while its state is created.
pub struct OpenFile {
    file: NonNull<bindings::file>,
}

impl OpenFile {
    /// The page cache of the file (`f_mapping`): every mapping of the device node is in
    /// its `i_mmap` tree.
    ///
    /// # Safety
    ///
    /// The value (and its copies) may only be used while the file is open: keep it in the
    /// state that `open` returns (dropped at `release`) and nowhere else.
    pub unsafe fn mapping(&self) -> Result<crate::aikrs::mapping::AddressSpace> {
        // SAFETY: `file` is a file being opened.
        let m = unsafe { bindings::aikrs_file_mapping(self.file.as_ptr()) };
        let m = NonNull::new(m).ok_or(EINVAL)?;
        // SAFETY: A file's `f_mapping` lives as long as its inode, which the open file
        // pins; the caller uses it only while the file is open.
        Ok(unsafe { crate::aikrs::mapping::AddressSpace::from_raw(m) })
    }
}

/// A mapping of the file being created in `mmap`.
pub struct VmaNew<'a, T: FileOps> {
    vma: NonNull<bindings::vm_area_struct>,
    file: &'a T,
}

impl<T: FileOps> VmaNew<'_, T> {
    fn info(&self) -> (usize, usize, usize, bool) {
        let (mut start, mut end, mut pgoff, mut shared) = (0, 0, 0, false);
        // SAFETY: `vma` is the vma being mmap'ed; the helper only reads it.
        unsafe {
            bindings::aikrs_vma_info(
                self.vma.as_ptr(),
                &mut start,
                &mut end,
                &mut pgoff,
                &mut shared,
            )
        };
        (start, end, pgoff, shared)
    }

    /// The first address.
    pub fn start(&self) -> usize {
        self.info().0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        let (s, e, _, _) = self.info();
        e - s
    }

    /// Whether the mapping is empty (never, for a real mmap).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file offset in pages (`vm_pgoff`).
    pub fn pgoff(&self) -> usize {
        self.info().2
    }

    /// Whether it is a shared mapping (`MAP_SHARED`).
    pub fn is_shared(&self) -> bool {
        self.info().3
    }

    /// Maps `page` at `addr` of the mapping (C `vm_insert_page`, which makes it a mixed
    /// map): the mapping takes its own reference on the page, so the caller may drop
    /// its [`crate::page::Page`] afterwards. A private writable mapping gets the page
    /// read-only (written, it is copied). Errors: `EINVAL` for a PFN map (see
    /// [`VmaNew::setup_pfnmap`]; `vm_insert_page` would BUG) or an address outside the
    /// mapping, `EFAULT`, `ENOMEM`.
    pub fn insert_page(&self, addr: usize, page: &crate::page::Page) -> Result {
        // SAFETY: `vma` is the vma being mmap'ed; the helper only reads its flags.
        if unsafe { bindings::aikrs_vma_is_pfnmap(self.vma.as_ptr()) } {
            return Err(EINVAL);
        }
        // SAFETY: `vma` is the vma being mmap'ed (the mmap_lock is held for writing, as
        // `vm_insert_page` requires); `page` is a valid, allocated page;
        // `vm_insert_page` checks the address and takes a reference.
        let ret = unsafe { bindings::vm_insert_page(self.vma.as_ptr(), addr, page.as_ptr()) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(())
    }

    /// Makes it a PFN map (`VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY`)
    /// whose faults go to [`FileOps::fault`] of this file.
    pub fn setup_pfnmap(&self) {
        // SAFETY: `vma` is being mmap'ed by this file; the ops table is static; the private
        // pointer is this file's state, which outlives the vma (a vma holds its file, and
        // the state is only dropped in `release`).
        unsafe {
            bindings::aikrs_vma_setup_pfnmap(
                self.vma.as_ptr(),
                &VmOps::<T>::OPS,
                core::ptr::from_ref::<T>(self.file).cast_mut().cast(),
            )
        };
    }
}

/// A page fault on a PFN map, served by [`FileOps::fault`].
pub struct Fault<'a> {
    vmf: NonNull<bindings::vm_fault>,
    ret: Option<bindings::vm_fault_t>,
    _p: PhantomData<&'a ()>,
}

impl Fault<'_> {
    /// The file offset of the faulting page, in pages.
    pub fn pgoff(&self) -> u64 {
        // SAFETY: `vmf` is the fault being handled.
        unsafe { bindings::aikrs_vmf_pgoff(self.vmf.as_ptr()) as u64 }
    }

    /// Maps page frame `pfn` at the faulting address (`vmf_insert_pfn`).
    ///
    /// # Safety
    ///
    /// `pfn` must be memory the caller owns and may expose to user space, and it must stay
    /// allocated until the mapping is gone and its TLB entries are flushed (e.g. by
    /// [`crate::aikrs::tlb::Batch::zap_mapping`] and a flush, or
    /// [`crate::aikrs::mapping::AddressSpace::unmap_pages`]).
    pub unsafe fn insert_pfn(&mut self, pfn: u64) -> Result {
        // SAFETY: `vmf` is the fault being handled, on a `VM_PFNMAP` vma (set up by
        // `setup_pfnmap`); the caller vouches for `pfn`; `vmf_insert_pfn` checks the rest.
        let ret = unsafe {
            let vma = bindings::aikrs_vmf_vma(self.vmf.as_ptr());
            let addr = bindings::aikrs_vmf_address(self.vmf.as_ptr());
            bindings::vmf_insert_pfn(vma, addr, pfn as usize)
        };
        self.ret = Some(ret);
        if ret == bindings::vm_fault_reason_VM_FAULT_NOPAGE as bindings::vm_fault_t {
            Ok(())
        } else if ret == bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t {
            Err(ENOMEM)
        } else {
            Err(EFAULT)
        }
    }
}

struct VmOps<T>(PhantomData<T>);

impl<T: FileOps> VmOps<T> {
    const OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        fault: Some(Self::fault),
        // SAFETY: All-zero is a valid `vm_operations_struct` (no callbacks).
        ..unsafe { core::mem::zeroed() }
    };

    /// # Safety
    ///
    /// Called by the MM for a fault on a vma set up by [`VmaNew::setup_pfnmap`] for `T`.
    unsafe extern "C" fn fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: `vmf` is valid during the call; its vma's private data is the `T` of the
        // file that mapped it, alive while the vma exists (see `setup_pfnmap`).
        let file = unsafe {
            let vma = bindings::aikrs_vmf_vma(vmf);
            &*bindings::aikrs_vma_private(vma).cast::<T>()
        };
        let Some(vmf) = NonNull::new(vmf) else {
            return bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;
        };
        let mut f = Fault {
            vmf,
            ret: None,
            _p: PhantomData,
        };
        match file.fault(&mut f) {
            Ok(()) => f
                .ret
                .unwrap_or(bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t),
            Err(e) if e == ENOMEM => bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t,
            Err(_) => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
        }
    }
}

/// The registered device: the C `miscdevice`, its file operations and the device data.
///
/// # Invariants
///
/// `misc` is registered (its `fops` points at `fops`) from `register` until `drop`; the
/// box never moves. `misc` is the first field (`repr(C)`), so `misc_open`'s pointer to it
/// is a pointer to the whole.
#[repr(C)]
struct Inner<T: FileOps> {
    misc: bindings::miscdevice,
    fops: bindings::file_operations,
    dev: T::Device,
}

/// A registered misc device `/dev/NAME`, deregistered when dropped.
pub struct Registration<T: FileOps> {
    inner: NonNull<Inner<T>>,
}

// SAFETY: The registration only owns `Inner`, whose device data is `Send + Sync`.
unsafe impl<T: FileOps> Send for Registration<T> {}
// SAFETY: As above.
unsafe impl<T: FileOps> Sync for Registration<T> {}

impl<T: FileOps> Registration<T> {
    /// Registers `/dev/name` (dynamic minor, mode 0600) with device data `dev`.
    pub fn register(
        name: &'static CStr,
        dev: T::Device,
        module: &'static ThisModule,
    ) -> Result<Self> {
        let fops = bindings::file_operations {
            owner: module.as_ptr(),
            open: Some(Self::open),
            release: Some(Self::release),
            unlocked_ioctl: Some(Self::ioctl),
            compat_ioctl: Some(Self::ioctl),
            mmap: Some(Self::mmap),
            // SAFETY: All-zero is valid for the remaining fields (no callbacks).
            ..unsafe { core::mem::zeroed() }
        };
        // SAFETY: All-zero is a valid `miscdevice` before registration.
        let mut misc: bindings::miscdevice = unsafe { core::mem::zeroed() };
        misc.minor = bindings::MISC_DYNAMIC_MINOR as i32;
        misc.name = crate::aikrs::compat::c_str_ptr(name).cast();
        misc.mode = 0o600;
        let inner = KBox::new(Inner { misc, fops, dev }, GFP_KERNEL)?;
        let inner = NonNull::from(KBox::leak(inner));
        // SAFETY: `inner` is a leaked box (stable address): point `fops` at its own file
        // operations, then register; `misc_register` only keeps the pointer.
        let ret = unsafe {
            let p = inner.as_ptr();
            (*p).misc.fops = &(*p).fops;
            bindings::misc_register(&mut (*p).misc)
        };
        if ret != 0 {
            // SAFETY: Not registered; nobody else has the pointer.
            drop(unsafe { KBox::from_raw(inner.as_ptr()) });
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: registered, boxed.
        Ok(Self { inner })
    }

    /// The device data.
    pub fn device(&self) -> &T::Device {
        // SAFETY: `inner` is valid until `drop`.
        unsafe { &(*self.inner.as_ptr()).dev }
    }

    /// # Safety
    ///
    /// Called by `misc_open` with `file->private_data` pointing at our `misc`.
    unsafe extern "C" fn open(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `misc_open` set `private_data` to the registered `miscdevice`, the first
        // field of an `Inner<T>` that stays registered while the module is loaded (the
        // file operations hold a module reference).
        let inner = unsafe { &*(*file).private_data.cast::<Inner<T>>() };
        // SAFETY: The device data lives as long as the registration, which (for a module)
        // ends only at module exit, after every file is closed; built-in, never.
        let dev: &'static T::Device = unsafe { &*core::ptr::addr_of!(inner.dev) };
        let Some(f) = NonNull::new(file) else {
            return EINVAL.to_errno();
        };
        let state = match T::open(dev, &OpenFile { file: f }) {
            Ok(s) => s,
            Err(e) => return e.to_errno(),
        };
        // SAFETY: The state is never moved out of the box: `release` rebuilds the pinned
        // box and drops it in place.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(state) });
        // SAFETY: `file` is being opened; we own `private_data` from now on.
        unsafe { (*file).private_data = raw.cast() };
        0
    }

    /// # Safety
    ///
    /// `file` was opened by `open` above.
    unsafe fn state<'a>(file: *mut bindings::file) -> &'a T {
        // SAFETY: `open` stored a boxed `T`, freed only in `release`.
        unsafe { &*(*file).private_data.cast::<T>() }
    }

    /// # Safety
    ///
    /// Called once, when the last reference to a file opened by `open` is gone.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `private_data` is the pinned box from `open`; no mapping or call uses it
        // any more (vmas hold the file, so they are all gone). Dropped in place.
        drop(unsafe { Pin::new_unchecked(KBox::from_raw((*file).private_data.cast::<T>())) });
        0
    }

    /// # Safety
    ///
    /// `file` was opened by `open`.
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: usize) -> isize {
        // SAFETY: As required.
        let state = unsafe { Self::state(file) };
        match state.ioctl(cmd, arg) {
            Ok(v) => v,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// `file` was opened by `open`; `vma` is the mapping being created.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: As required.
        let state = unsafe { Self::state(file) };
        let Some(vma) = NonNull::new(vma) else {
            return EINVAL.to_errno();
        };
        match state.mmap(&VmaNew { vma, file: state }) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}

impl<T: FileOps> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: Registered (type invariant); after `misc_deregister` no new open can
        // start, and open files hold the module, so none is left when this runs at exit.
        unsafe {
            bindings::misc_deregister(&mut (*self.inner.as_ptr()).misc);
            drop(KBox::from_raw(self.inner.as_ptr()));
        }
    }
}

/// Page frame number of a page (`page_to_pfn`).
pub fn page_pfn(page: &crate::page::Page) -> u64 {
    // SAFETY: `page` is a valid page.
    unsafe { bindings::aikrs_page_to_pfn(page.as_ptr()) as u64 }
}
