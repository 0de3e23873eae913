#include "mountd/source_factory.h"

namespace ckptfs {

Result<LiveDiskSource> OpenLiveDisk(const NbdOptions& options,
                                    BlockCache& cache) {
  ASSIGN_OR_RETURN(std::shared_ptr<NbdSource> nbd, NbdSource::Open(options));
  LiveDiskSource out;
  out.image = cache.Wrap(nbd);
  out.nbd = std::move(nbd);
  return out;
}

}  // namespace ckptfs
