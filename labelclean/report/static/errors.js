(function(){function bump(){var b=document.body;
b.setAttribute('data-js-errors',String(Number(b.getAttribute('data-js-errors')||0)+1));}
window.addEventListener('error',bump);window.addEventListener('unhandledrejection',bump);})();
